"""State store of a hub: what was forwarded where (idempotent hops), verdicts, hop records.

SQLite under the data directory by default (one machine, one command);
PostgreSQL by URL when several workers on several hosts serve one hub.
Both speak the same SQL through :class:`SqlStore`; only placeholders and
connection handling differ.

Exactly-once into inboxes rests on :meth:`SqlStore.claim`: before a hub
publishes a copy to a target it claims ``(hub, digest, target)``.

- ``new``: first time; publish, then :meth:`confirm` after the broker confirms.
- ``done``: a copy already went there (a duplicate, or a redelivery after a
  crash between confirm and ack): do not publish again, just ack.
- ``busy``: another live worker holds the claim: retry later.
- ``takeover``: the previous holder's lease ran out (it died): publish again.
  The copy carries the same ``message_id`` so the inbox reader drops a twin.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from broker import sqlite
from broker.core.auditlog import AuditEntry
from broker.core.errors import ConfigError, DocumentIdReused, RejectedInput, StatusReused, TransientError
from broker.i18n import N_
from broker.relay.migrations import MIGRATIONS, Migration, apply
from broker.relay.records import Records
from broker.settings import Tuning

ClaimState = Literal["new", "done", "busy", "takeover"]

ACCEPTED, REJECTED = "accepted", "rejected"

REUSED = frozenset({DocumentIdReused.code, StatusReused.code})
"""The refusals an identity held by other bytes makes (:meth:`SqlStore.admit` claims the refusal
the worker makes of them in the same transaction)."""


@dataclass(frozen=True)
class Standing:
    """A verdict on a message's bytes at a hub.  The first one recorded stands for every later
    copy of the same bytes."""

    verdict: str
    """:data:`ACCEPTED` or :data:`REJECTED`."""
    code: str
    reason: str

    @property
    def rejected(self) -> bool:
        return self.verdict == REJECTED


@dataclass(frozen=True)
class Admit:
    """One judged message to admit: its verdict to record and the copies to claim."""

    hub: str
    digest: str
    targets: Sequence[str]
    owner: str
    entries: Sequence[AuditEntry] = ()
    message: bytes | None = None
    verdict: Standing | None = None
    """The hop's verdict on these bytes, to record unless one stands already (None: record
    nothing, for a refusal that depends on who handed the bytes in)."""
    document_id: str = ""
    sender: str = ""
    identity: tuple[str, str, str] | None = None
    afresh: bool = False
    """An operator's replay: claim even where an earlier refusal stands (but not over
    ``DOCUMENT_ID_REUSED`` or ``STATUS_REUSED``: other bytes hold this message's identity)."""
    status: tuple[str, str, str] | None = None
    """(sender, document answered, status code) of an accepted status."""


@dataclass(frozen=True)
class Admission:
    standing: Standing | None
    """The verdict that stands on these bytes here (None when nothing was recorded)."""
    claims: dict[str, ClaimState] | None
    """The claims, or None: an earlier refusal stands and nothing was claimed."""


Refuse = Callable[[int, Standing], Admit]
"""For :meth:`SqlStore.admit`: the ``i``-th message passed, but its identity is held by other
bytes (the standing verdict, ``DOCUMENT_ID_REUSED`` or ``STATUS_REUSED``).  Returns the refusal to
claim in its place."""


class SqlStore(Records):
    """The state store over a DB-API connection (sqlite3 or psycopg)."""

    def __init__(self, connect: Any, placeholder: str, transient: tuple[type[BaseException], ...],
                 blob: str = "BLOB", *, lease_seconds: float = 15.0) -> None:
        self.lease_seconds = lease_seconds
        """How long a worker's claim on a message protects it from other workers."""
        self._connect = connect
        self._ph = placeholder
        self._transient = transient
        self._lock = threading.Lock()
        self._conn: Any = None
        self._blob = blob
        self._closing: list[Callable[[], None]] = []
        self.schema_version = self.migrate(MIGRATIONS)

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return "postgresql" if self._ph == "%s" else "sqlite"

    def applied_migrations(self) -> list[int]:
        """The numbers of the schema steps applied to this database, in order."""
        with self._tx() as cur:
            cur.execute("SELECT version FROM schema_version ORDER BY version")
            return [int(r[0]) for r in cur.fetchall()]

    def migrate(self, migrations: Sequence[Migration]) -> int:
        """Bring the schema up to the last of ``migrations`` (:func:`broker.relay.migrations.apply`);
        returns the version reached."""
        with self._tx() as cur:
            return apply(cur, migrations, postgres=self.dialect == "postgresql", blob=self._blob, q=self._q)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                cur = self._conn.cursor()
                try:
                    yield cur
                    self._conn.commit()
                except BaseException:
                    self._conn.rollback()
                    raise
            except self._transient as exc:
                self._drop()
                raise TransientError(N_("state store unavailable: {reason}"), reason=exc) from None

    def _drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail too
            pass
        self._conn = None

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._ph)

    def claim(self, hub: str, digest: str, targets: Sequence[str], owner: str,
              entries: Sequence[AuditEntry] = (), message: bytes | None = None) -> dict[str, ClaimState]:
        """Claim each target.  When something is new to publish, append ``entries`` to the audit
        log and keep ``message`` in the same transaction: a receipt and the state it attests are
        stored together, and a duplicate leaves no second entry."""
        claims = self.admit([Admit(hub, digest, targets, owner, entries, message)])[0].claims
        assert claims is not None  # no verdict asked for: nothing can stand against the claim
        return claims

    def admit(self, items: Sequence[Admit], *, confirmed: Sequence[tuple[str, str, Sequence[str]]] = (),
              refuse: Refuse | None = None) -> list[Admission]:
        """Record each message's verdict and claim its copies, all in one transaction (the worker
        admits every delivery of a batch at once).  Per message: the first verdict on its bytes
        stands (with its document or status identity, see :meth:`record_verdict`).  If this copy
        passed but a refusal stands: when it is one of :data:`REUSED` (other bytes hold the
        identity), the refusal ``refuse`` returns is claimed instead, in this same transaction; any other
        refusal keeps nothing claimed (a duplicate of a refused message), unless the copy is an
        operator's replay (``afresh``).  Otherwise the targets are claimed as :meth:`claim` does.
        ``confirmed``: claims to mark confirmed in the same transaction (as :meth:`confirm_many`),
        those of messages published meanwhile."""
        now = time.time()
        out: list[Admission] = []
        with self._tx() as cur:
            self._confirm(cur, confirmed, now)
            heads: dict[str, tuple[int, str]] = {}
            for index, item in enumerate(items):
                standing = None
                if item.verdict is not None:
                    standing = self._record_verdict(cur, item.hub, item.digest, item.document_id, item.sender,
                                                    item.verdict, item.identity, now, item.status)
                    refused = standing.rejected and item.verdict.verdict != REJECTED
                    if refused and standing.code in REUSED and refuse is not None:
                        item = refuse(index, standing)
                    elif refused and (not item.afresh or standing.code in REUSED):
                        out.append(Admission(standing, None))
                        continue
                out.append(Admission(standing, self._claim(cur, item, now, heads)))
        return out

    def _claim(self, cur: Any, item: Admit, now: float, heads: dict[str, tuple[int, str]]) -> dict[str, ClaimState]:
        hub, digest, owner = item.hub, item.digest, item.owner
        lease = now + self.lease_seconds
        out: dict[str, ClaimState] = {}
        for target in item.targets:
            cur.execute(self._q("INSERT INTO hops (hub, digest, target, state, owner, lease_until, updated) "
                                "VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING"),
                        (hub, digest, target, owner, lease, now))
            if cur.rowcount == 1:
                out[target] = "new"
                continue
            cur.execute(self._q("SELECT state, owner, lease_until FROM hops "
                                "WHERE hub = ? AND digest = ? AND target = ?"), (hub, digest, target))
            state, holder, until = cur.fetchone()
            if state == "confirmed":
                out[target] = "done"
            elif holder == owner or until < now:
                # our own earlier attempt (redelivered to us), or a dead holder's
                cur.execute(self._q("UPDATE hops SET owner = ?, lease_until = ?, updated = ? WHERE hub = ? "
                                    "AND digest = ? AND target = ? AND owner = ? AND state = 'pending'"),
                            (owner, lease, now, hub, digest, target, holder))
                out[target] = "takeover" if cur.rowcount == 1 else "busy"
            else:
                out[target] = "busy"
        if "new" in out.values() and "busy" not in out.values():
            for entry in item.entries:
                self._append(cur, hub, digest, entry, now, heads)
            if item.message is not None:
                cur.execute(self._q("INSERT INTO messages (digest, data) VALUES (?, ?) ON CONFLICT DO NOTHING"),
                            (digest, item.message))
        return out

    def confirm(self, hub: str, digest: str, targets: Sequence[str]) -> None:
        self.confirm_many([(hub, digest, targets)])

    def confirm_many(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        """Mark many claims confirmed in one transaction."""
        with self._tx() as cur:
            self._confirm(cur, items, time.time())

    def _confirm(self, cur: Any, items: Sequence[tuple[str, str, Sequence[str]]], now: float) -> None:
        for hub, digest, targets in items:
            for target in targets:
                cur.execute(self._q("UPDATE hops SET state = 'confirmed', updated = ? "
                                    "WHERE hub = ? AND digest = ? AND target = ?"), (now, hub, digest, target))

    def record_verdict(self, hub: str, digest: str, document_id: str, sender: str, verdict: Standing,
                       identity: tuple[str, str, str] | None = None,
                       status: tuple[str, str, str] | None = None) -> Standing:
        """Store the first verdict on these bytes at this hub; return the one that stands.  With the
        ``identity`` of an accepted document (sender, DocumentId, business type), also claim it for
        these bytes: if other bytes hold it already, the verdict that stands is a refusal,
        ``DOCUMENT_ID_REUSED``; the same with the ``status`` identity of an accepted status
        (sender, document answered, status code): ``STATUS_REUSED``."""
        with self._tx() as cur:
            return self._record_verdict(cur, hub, digest, document_id, sender, verdict, identity, time.time(), status)

    def _record_verdict(self, cur: Any, hub: str, digest: str, document_id: str, sender: str, verdict: Standing,
                        identity: tuple[str, str, str] | None, now: float,
                        status: tuple[str, str, str] | None = None) -> Standing:
        if status is not None and verdict.verdict == ACCEPTED:
            holder = self._hold(cur, "statuses", ("sender", "response_for", "status"), hub, status, digest, now)
            if holder != digest:
                exc: RejectedInput = StatusReused(
                    N_("status {status} of {sender} about {about} was already accepted as other bytes ({holder}...)"),
                    status=status[2], sender=status[0], about=status[1], holder=holder[:16])
                verdict = Standing(REJECTED, exc.code, exc.message)
        if identity is not None and verdict.verdict == ACCEPTED:
            cur.execute(self._q("INSERT INTO documents (hub, sender, document_id, business, digest, at) "
                                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"), (hub, *identity, digest, now))
            if cur.rowcount != 1:  # the identity was held already: by these bytes, or by others?
                cur.execute(self._q("SELECT digest FROM documents WHERE hub = ? AND sender = ? AND document_id = ? "
                                    "AND business = ?"), (hub, *identity))
                holder = str(cur.fetchone()[0])
                if holder != digest:
                    exc = DocumentIdReused(N_("document {document_id!r} of {sender} (business type {business}) was "
                                              "already accepted as other bytes ({digest}...)"), document_id=identity[1],
                                           sender=identity[0], business=identity[2], digest=holder[:16])
                    verdict = Standing(REJECTED, exc.code, exc.message)
        cur.execute(self._q("INSERT INTO verdicts (hub, digest, document_id, sender, verdict, code, reason, at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                    (hub, digest, document_id, sender, verdict.verdict, verdict.code, verdict.reason, now))
        if cur.rowcount == 1:  # the first verdict on these bytes: it stands
            return verdict
        cur.execute(self._q("SELECT verdict, code, reason FROM verdicts WHERE hub = ? AND digest = ?"), (hub, digest))
        return Standing(*cur.fetchone())

    def _hold(self, cur: Any, table: str, columns: tuple[str, str, str], hub: str, key: tuple[str, str, str],
              digest: str, now: float) -> str:
        """Claim identity ``key`` of ``table`` for ``digest``; return the digest that holds it."""
        names = ", ".join(columns)
        cur.execute(self._q(f"INSERT INTO {table} (hub, {names}, digest, at) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT DO NOTHING"), (hub, *key, digest, now))
        if cur.rowcount == 1:
            return digest
        where = " AND ".join(f"{c} = ?" for c in columns)
        cur.execute(self._q(f"SELECT digest FROM {table} WHERE hub = ? AND {where}"), (hub, *key))
        return str(cur.fetchone()[0])

    def verdict(self, hub: str, digest: str) -> Standing | None:
        with self._tx() as cur:
            cur.execute(self._q("SELECT verdict, code, reason FROM verdicts WHERE hub = ? AND digest = ?"),
                        (hub, digest))
            row = cur.fetchone()
        return Standing(*row) if row else None

    def on_close(self, call: Callable[[], None]) -> None:
        self._closing.append(call)

    def close(self) -> None:
        for call in self._closing:
            call()
        self._closing.clear()
        with self._lock:
            self._drop()


def sqlite_store(path: str | Path, *, timeout: float = 10.0, lease_seconds: float = 15.0,
                 background_checkpoints: bool = False) -> SqlStore:
    """A SQLite store; ``background_checkpoints`` (a hub worker's): the log is copied back into the
    database by a thread of its own, never in a commit (:class:`broker.sqlite.Checkpointer`)."""
    p = Path(path)

    def connect() -> sqlite3.Connection:
        return sqlite.connect(p, timeout=timeout, checkpoint_here=not background_checkpoints)

    store = SqlStore(connect, "?", (sqlite3.OperationalError,), lease_seconds=lease_seconds)
    if background_checkpoints:
        store.on_close(sqlite.Checkpointer(p, timeout=timeout).start().stop)
    return store


def postgres_store(url: str, *, lease_seconds: float = 15.0) -> SqlStore:
    import psycopg

    def connect() -> Any:
        return psycopg.connect(url, connect_timeout=5)

    return SqlStore(connect, "%s", (psycopg.OperationalError, psycopg.InterfaceError), blob="BYTEA",
                    lease_seconds=lease_seconds)


def open_store(url_or_path: str, *, hub: str | None = None, tuning: Tuning | None = None,
               worker: bool = False) -> SqlStore:
    """``postgresql://...`` opens PostgreSQL; anything else is a data directory for SQLite (for a
    hub ``worker``, with checkpoints in a thread of their own)."""
    t = tuning or Tuning()
    if url_or_path.startswith(("postgresql://", "postgres://")):
        return postgres_store(url_or_path, lease_seconds=t.lease_seconds)
    if "://" in url_or_path:
        raise ConfigError(N_("state store {location!r}: use a postgresql:// URL or a directory"), location=url_or_path)
    return sqlite_store(Path(url_or_path) / f"{hub or 'lienthong'}.sqlite3", timeout=t.sqlite_timeout,
                        lease_seconds=t.lease_seconds, background_checkpoints=worker)

