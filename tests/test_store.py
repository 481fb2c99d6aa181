"""The state store on SQLite and on a real PostgreSQL: claims make hops idempotent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.store import SqlStore, Verdict, open_store, sqlite_store


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
    first = store.record_verdict(hub, digest, "doc", "A", Verdict("rejected", "SIG_DIGEST", "altered"))
    again = store.record_verdict(hub, digest, "doc", "A", Verdict("accepted", "", ""))
    assert first == again == Verdict("rejected", "SIG_DIGEST", "altered")
    assert store.verdict(hub, digest) == first


def test_handed_once(store: SqlStore) -> None:
    """The inbox reader records a message id once."""
    agency, mid = f"a-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    assert not store.is_handed(agency, mid)
    assert store.mark_handed(agency, mid) is True
    assert store.mark_handed(agency, mid) is False
    assert store.is_handed(agency, mid)


def test_postgres_url_is_used(postgres_url: str) -> None:
    """open_store picks PostgreSQL for a postgresql:// URL (not a silent SQLite fallback)."""
    s = open_store(postgres_url)
    try:
        assert s._ph == "%s"
        assert s.claim("pg-check", uuid.uuid4().hex, ["x"], "w") == {"x": "new"}
    finally:
        s.close()


def test_unavailable_store_is_transient(tmp_path: Path) -> None:
    """A store that cannot be reached raises TransientError (retried), not a crash."""
    from broker.errors import TransientError
    with pytest.raises(TransientError):
        open_store("postgresql://lienthong:wrong@127.0.0.1:1/lienthong")


def test_log_head_and_newest_entries(store: SqlStore) -> None:
    """The head of a hub's log and its newest entries are read without reading the whole log
    (a worker signs the head every minute; the dashboard shows the newest)."""
    from broker.store import AuditEntry

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
                s.mark_handed("000.00.00.H41", uuid.uuid4().hex)
                s.close()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
