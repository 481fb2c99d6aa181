"""The state store on SQLite and on a real PostgreSQL: claims make hops idempotent."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.core.errors import ConfigError
from broker.relay.migrations import MIGRATIONS
from broker.relay.store import SqlStore, Standing, open_store, sqlite_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        s = sqlite_store(tmp_path / "state.sqlite3")
    else:
        s = open_store(request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def test_claim_new_then_done(store: SqlStore) -> None:
    """First claim is new; after confirm, the same copy is done (a duplicate is never published)."""
    hub, digest = f"h-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    assert store.claim(hub, digest, ["inbox:A", "hub:B"], "w1") == {"inbox:A": "new", "hub:B": "new"}
    store.confirm(hub, digest, ["inbox:A", "hub:B"])
    assert store.claim(hub, digest, ["inbox:A", "hub:B"], "w2") == {"inbox:A": "done", "hub:B": "done"}


def test_claim_busy_then_takeover_after_lease(store: SqlStore) -> None:
    """A pending claim of a live worker is busy for others; once its lease runs out another takes over."""
    hub, digest = f"h-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    assert store.claim(hub, digest, ["inbox:A"], "w1") == {"inbox:A": "new"}
    assert store.claim(hub, digest, ["inbox:A"], "w2") == {"inbox:A": "busy"}
    assert store.claim(hub, digest, ["inbox:A"], "w1") == {"inbox:A": "takeover"}
    store.lease_seconds = -1.0  # the next claim writes an already-expired lease
    store.claim(hub, digest, ["inbox:A"], "w1")
    assert store.claim(hub, digest, ["inbox:A"], "w3") == {"inbox:A": "takeover"}
    assert store.claim(hub, digest, ["inbox:A"], "w2") == {"inbox:A": "takeover"}


def test_first_verdict_stands(store: SqlStore) -> None:
    """A duplicate of a rejected message gets the rejection, never a new verdict."""
    hub, digest = f"h-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    first = store.record_verdict(hub, digest, "doc", "A", Standing("rejected", "SIG_DIGEST", "altered"))
    again = store.record_verdict(hub, digest, "doc", "A", Standing("accepted", "", ""))
    assert first == again == Standing("rejected", "SIG_DIGEST", "altered")
    assert store.verdict(hub, digest) == first


def test_postgres_url_is_used(postgres_url: str) -> None:
    """open_store picks PostgreSQL for a postgresql:// URL (not a silent SQLite fallback)."""
    s = open_store(postgres_url)
    try:
        assert s.dialect == "postgresql"
        assert s.claim("pg-check", uuid.uuid4().hex, ["x"], "w") == {"x": "new"}
    finally:
        s.close()


def test_unavailable_store_is_transient(tmp_path: Path) -> None:
    """A store that cannot be reached raises TransientError (retried), not a crash."""
    from broker.core.errors import TransientError
    with pytest.raises(TransientError):
        open_store("postgresql://lienthong:wrong@127.0.0.1:1/lienthong")


def test_log_head_and_newest_entries(store: SqlStore) -> None:
    """The head of a hub's log and its newest entries are read without reading the whole log
    (a worker signs the head every minute; the dashboard shows the newest)."""
    from broker.core.auditlog import AuditEntry

    hub = f"h-{uuid.uuid4().hex[:6]}"
    assert store.audit_head(hub) is None
    for i in range(30):
        store.append(hub, f"d{i}", AuditEntry("hop", f"doc-{i}", f"token-{i}"))
    head = store.audit_head(hub)
    assert head is not None and (head.seq, head.body) == (30, "token-29")
    assert [r.seq for r in store.audit_rows(hub=hub, newest=5)] == [26, 27, 28, 29, 30]
    assert len(store.audit_rows(hub=hub)) == 30


def test_sqlite_opened_by_several_at_once(tmp_path: Path) -> None:
    """Several connections opening one new SQLite file at the same moment (a second worker, the SDK
    beside the gateway) all get a working store: switching the file to WAL waits for the others
    instead of failing with "database is locked"."""
    import threading

    errors: list[BaseException] = []
    for round_ in range(40):
        path = tmp_path / f"new-{round_}.sqlite3"

        def open_and_write(path: Path = path) -> None:
            try:
                s = sqlite_store(path)
                s.record_verdict("H41", uuid.uuid4().hex, "doc", "000.00.00.H41", Standing("accepted", "", ""))
                s.close()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def _open_at_once(url: str, start: Any, out: Any) -> None:
    """One process of the concurrent-start test: wait for the others, then open the store."""
    start.wait()
    try:
        s = open_store(url, hub="h")
        out.put(("ok", s.schema_version))
        s.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
        out.put(("failed", repr(exc)))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_schema_created_by_many_processes_at_once(kind: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    """Eight processes (a hub's workers, its CLI) open one empty store at the same moment: every one
    starts, and each migration step is applied exactly once."""
    url = request.getfixturevalue("new_postgres_url") if kind == "postgres" else str(tmp_path / "state")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, start, out)) for _ in range(8)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process import and reach the barrier
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == [("ok", len(MIGRATIONS))] * 8
    s = open_store(url, hub="h")
    try:
        assert s.applied_migrations() == [n for n, _, _ in MIGRATIONS]
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migrations_apply_in_order_once_and_refuse_a_newer_schema(kind: str, request: pytest.FixtureRequest,
                                                                  tmp_path: Path) -> None:
    """A later step is applied once, on top of what is there; a store whose schema is newer than
    the code refuses to start with a sentence saying so.  (A store of its own: the extra step
    must not reach the other tests' database.)"""
    url = request.getfixturevalue("new_postgres_url") if kind == "postgres" else str(tmp_path / "state")
    store = open_store(url, hub="h")
    try:
        table = f"extra_{uuid.uuid4().hex[:8]}"
        steps = [*MIGRATIONS, (len(MIGRATIONS) + 1, "test step", (f"CREATE TABLE {table} (x INTEGER)",))]
        assert store.migrate(steps) == len(MIGRATIONS) + 1
        assert store.migrate(steps) == len(MIGRATIONS) + 1  # a second run finds nothing to do
        assert store.applied_migrations() == [n for n, _, _ in steps]
        with pytest.raises(ConfigError, match="newer than this lienthong knows"):
            store.migrate(MIGRATIONS)
    finally:
        store.close()


def test_a_database_from_before_versioning_is_adopted(tmp_path: Path) -> None:
    """A store made before schema versions existed (its tables, no schema_version) opens with its
    rows kept and is recorded at version 1."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for stmt in MIGRATIONS[0][2]:
        conn.execute(stmt.replace("{blob}", "BLOB"))
    conn.execute("INSERT INTO verdicts VALUES ('H41', 'd1', 'doc', 'A', 'accepted', '', '', 0)")
    conn.commit()
    conn.close()
    s = sqlite_store(path)
    try:
        assert s.schema_version == len(MIGRATIONS)
        assert s.verdict("H41", "d1") == Standing("accepted", "", "")
    finally:
        s.close()


def test_one_set_of_bytes_per_document(store: SqlStore) -> None:
    """The first bytes accepted for (sender, DocumentId, business type) hold it: other bytes with
    that identity are refused DOCUMENT_ID_REUSED, and the refusal stands for them; the first bytes
    stay accepted; another business type (an update of the document) is its own identity."""
    hub, ok, other = f"h-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, uuid.uuid4().hex
    identity = ("000.00.51.H41", f"DOC-{uuid.uuid4().hex[:6]}", "0")
    accepted = Standing("accepted", "", "")
    assert store.record_verdict(hub, ok, identity[1], identity[0], accepted, identity) == accepted
    refused = store.record_verdict(hub, other, identity[1], identity[0], accepted, identity)
    assert refused.verdict == "rejected" and refused.code == "DOCUMENT_ID_REUSED"
    assert ok[:16] in refused.reason
    assert store.record_verdict(hub, other, identity[1], identity[0], accepted, identity) == refused
    assert store.record_verdict(hub, ok, identity[1], identity[0], accepted, identity) == accepted
    update = (identity[0], identity[1], "2")
    assert store.record_verdict(hub, uuid.uuid4().hex, identity[1], identity[0], accepted, update) == accepted


def test_one_set_of_bytes_per_status(store: SqlStore) -> None:
    """A status is known by (sender, document answered, status code): other bytes with that identity
    (a status re-serialised, re-signed) are refused STATUS_REUSED and the refusal stands for them;
    the first bytes stay accepted; another status code about the same document is its own status."""
    hub, ok, other = f"h-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, uuid.uuid4().hex
    status = ("001.00.31.H14", f"000.00.51.H41/DOC-{uuid.uuid4().hex[:6]}", "03")
    accepted = Standing("accepted", "", "")
    assert store.record_verdict(hub, ok, "d", status[0], accepted, status=status) == accepted
    refused = store.record_verdict(hub, other, "d", status[0], accepted, status=status)
    assert refused.verdict == "rejected" and refused.code == "STATUS_REUSED" and ok[:16] in refused.reason
    assert store.record_verdict(hub, other, "d", status[0], accepted, status=status) == refused
    assert store.record_verdict(hub, ok, "d", status[0], accepted, status=status) == accepted
    completed = (status[0], status[1], "06")
    assert store.record_verdict(hub, uuid.uuid4().hex, "d", status[0], accepted, status=completed) == accepted


def test_admit_records_verdicts_and_claims_in_one_transaction(store: SqlStore) -> None:
    """One admit for a whole batch: each message's verdict is recorded and its copies claimed; a
    copy of bytes refused before keeps the refusal and claims nothing, unless an operator replays it
    (judged afresh), but never over DOCUMENT_ID_REUSED; audit entries of one batch chain in order."""
    from broker.core.auditlog import AuditEntry, entry_hash
    from broker.relay.store import Admit

    hub = f"h-{uuid.uuid4().hex[:6]}"
    good, bad, reused, first = (uuid.uuid4().hex for _ in range(4))
    accepted, refused = Standing("accepted", "", ""), Standing("rejected", "SIG_DIGEST", "altered")
    identity = ("A", f"DOC-{uuid.uuid4().hex[:6]}", "0")
    assert store.record_verdict(hub, bad, "d", "A", refused) == refused
    assert store.record_verdict(hub, first, identity[1], "A", accepted, identity) == accepted
    out = store.admit([
        Admit(hub, good, ["hub:B"], "w1", [AuditEntry("hop", "d1", "one")], b"bytes", accepted, "d1", "A"),
        Admit(hub, bad, ["hub:B"], "w1", [AuditEntry("hop", "d2", "two")], None, accepted, "d2", "A"),
        Admit(hub, uuid.uuid4().hex, ["parking"], "w1", [AuditEntry("hop", "d3", "three")], None, None),
        Admit(hub, reused, ["hub:B"], "w1", (), None, accepted, identity[1], "A", identity, afresh=True),
    ])
    assert [a.claims for a in out] == [{"hub:B": "new"}, None, {"parking": "new"}, None]
    assert out[0].standing == accepted and out[1].standing == refused and out[2].standing is None
    assert out[3].standing is not None and out[3].standing.code == "DOCUMENT_ID_REUSED"
    assert store.message(good) == b"bytes"
    rows = store.audit_rows(hub=hub)
    assert [r.body for r in rows] == ["one", "three"] and [r.seq for r in rows] == [1, 2]
    assert rows[0].prev == "" and rows[1].prev == rows[0].hash and all(r.hash == entry_hash(r) for r in rows)
    replay = store.admit([Admit(hub, bad, ["hub:B"], "w1", (), None, accepted, "d2", "A", afresh=True)])
    assert replay[0].standing == refused and replay[0].claims == {"hub:B": "new"}


def test_a_workers_checkpoints_run_beside_it(tmp_path: Path) -> None:
    """A hub worker's store never checkpoints in a commit: written alone, 5 MB stay in the write-ahead
    log and the database file keeps its first pages.  With its checkpoint thread, the database file
    itself holds them within seconds (nothing here runs a checkpoint)."""
    from broker import sqlite

    def sizes(path: Path) -> tuple[int, int]:
        return path.stat().st_size, Path(str(path) + "-wal").stat().st_size

    alone = tmp_path / "alone.sqlite3"
    plain = sqlite.connect(alone, checkpoint_here=False)
    plain.execute("CREATE TABLE t (x BLOB)")
    for _ in range(300):
        plain.execute("INSERT INTO t VALUES (?)", (b"x" * 16000,))
        plain.commit()
    db, wal = sizes(alone)
    assert db < 100_000 and wal > 4_800_000, (db, wal)
    plain.close()

    hub = tmp_path / "hub.sqlite3"
    store = sqlite_store(hub, background_checkpoints=True)
    try:
        for _ in range(300):
            store.claim("H", uuid.uuid4().hex, ["t"], "w", message=b"x" * 16000)
        deadline = time.monotonic() + 10
        while sizes(hub)[0] < 4_800_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sizes(hub)[0] >= 4_800_000, sizes(hub)
    finally:
        store.close()
