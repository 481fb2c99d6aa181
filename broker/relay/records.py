"""What a hub's state store keeps as records: its audit log (append-only, each entry chained to
the one before by its hash), the signed checkpoints of the log's head and their time-stamps, the
exact bytes of the messages it accepted or refused (evidence), and the signed directories it
applied.  Part of :class:`broker.relay.store.SqlStore`, which holds the claims and verdicts that
make hops idempotent and lends these its transactions."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from broker.core.auditlog import AuditEntry, AuditRow, entry_hash


class Records:
    """The records of a state store (mixed into :class:`broker.relay.store.SqlStore`)."""

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError  # the store's transaction

    def _q(self, sql: str) -> str:
        raise NotImplementedError  # the store's placeholders

    @property
    def dialect(self) -> str:
        raise NotImplementedError

    def _append(self, cur: Any, hub: str, digest: str, entry: AuditEntry, now: float,
                heads: dict[str, tuple[int, str]] | None = None) -> AuditRow:
        """Append one entry to ``hub``'s chained log; ``heads`` carries the log's head from one
        append to the next within a transaction (read once, under the transaction's lock)."""
        heads = {} if heads is None else heads
        if hub not in heads:
            if self.dialect == "postgresql":  # serialize appends of one hub across hosts
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (hub,))
            cur.execute(self._q("SELECT seq, hash FROM audit WHERE hub = ? ORDER BY seq DESC LIMIT 1"), (hub,))
            last = cur.fetchone()
            heads[hub] = (int(last[0]), str(last[1])) if last else (0, "")
        seq, prev = heads[hub][0] + 1, heads[hub][1]
        row = AuditRow(hub, seq, now, entry.kind, entry.document_id, digest, entry.body, prev, "")
        row = AuditRow(**{**row.__dict__, "hash": entry_hash(row)})
        cur.execute(self._q("INSERT INTO audit (hub, seq, at, kind, document_id, digest, body, prev, hash) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    (row.hub, row.seq, row.at, row.kind, row.document_id, row.digest, row.body, row.prev, row.hash))
        heads[hub] = (seq, row.hash)
        return row

    def append(self, hub: str, digest: str, entry: AuditEntry) -> AuditRow:
        with self._tx() as cur:
            return self._append(cur, hub, digest, entry, time.time())

    def audit_rows(self, *, hub: str | None = None, document_id: str | None = None,
                   since: float | None = None, until: float | None = None,
                   newest: int | None = None) -> list[AuditRow]:
        """Audit entries in log order, optionally of one hub or document, appended in
        ``[since, until)``, or only the ``newest`` few."""
        given = [(c, v) for c, v in (("at >= ?", since), ("at < ?", until), ("hub = ?", hub),
                                      ("document_id = ?", document_id)) if v is not None]
        where = [c for c, _ in given]
        args = [v for _, v in given]
        sql = "SELECT hub, seq, at, kind, document_id, digest, body, prev, hash FROM audit"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        if newest is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY at DESC LIMIT {int(newest)}) AS newest"
        with self._tx() as cur:
            cur.execute(self._q(sql + " ORDER BY hub, seq"), tuple(args))
            return [AuditRow(r[0], int(r[1]), float(r[2]), *r[3:]) for r in cur.fetchall()]

    def audit_head(self, hub: str) -> AuditRow | None:
        """The last entry of ``hub``'s log (one row, whatever the log's length)."""
        with self._tx() as cur:
            cur.execute(self._q("SELECT hub, seq, at, kind, document_id, digest, body, prev, hash FROM audit "
                                "WHERE hub = ? ORDER BY seq DESC LIMIT 1"), (hub,))
            r = cur.fetchone()
        return AuditRow(r[0], int(r[1]), float(r[2]), *r[3:]) if r else None

    def add_checkpoint(self, hub: str, seq: int, hash_: str, at: float, token: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q("INSERT INTO checkpoints (hub, seq, hash, at, token) VALUES (?, ?, ?, ?, ?) "
                                "ON CONFLICT DO NOTHING"), (hub, seq, hash_, at, token))

    def add_timestamp(self, hub: str, seq: int, tsr: bytes) -> None:
        """Keep a time-stamping authority's answer (DER) about the checkpoint at ``seq``."""
        with self._tx() as cur:
            cur.execute(self._q("INSERT INTO timestamps (hub, seq, tsr) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"),
                        (hub, seq, tsr))

    def timestamps(self, hub: str) -> dict[int, bytes]:
        with self._tx() as cur:
            cur.execute(self._q("SELECT seq, tsr FROM timestamps WHERE hub = ?"), (hub,))
            return {int(r[0]): bytes(r[1]) for r in cur.fetchall()}

    def checkpoints(self, hub: str) -> list[tuple[int, str, float, str]]:
        with self._tx() as cur:
            cur.execute(self._q("SELECT seq, hash, at, token FROM checkpoints WHERE hub = ? ORDER BY seq"), (hub,))
            return [(int(r[0]), r[1], float(r[2]), r[3]) for r in cur.fetchall()]

    def message(self, digest: str) -> bytes | None:
        with self._tx() as cur:
            cur.execute(self._q("SELECT data FROM messages WHERE digest = ?"), (digest,))
            row = cur.fetchone()
        return bytes(row[0]) if row else None

    def keep_directory(self, hub: str, version: int, digest: str, signed: bytes) -> bool:
        """Keep a signed directory ``hub`` applies; False if that version was kept already (by another
        worker of the hub, say)."""
        with self._tx() as cur:
            cur.execute(self._q("INSERT INTO directories (hub, version, digest, data, applied) VALUES (?, ?, ?, ?, ?) "
                                "ON CONFLICT DO NOTHING"), (hub, version, digest, signed, time.time()))
            return bool(cur.rowcount == 1)

    def directory(self, hub: str, version: int | None = None) -> bytes | None:
        """The signed directory ``hub`` applied last (or its ``version``), as received."""
        with self._tx() as cur:
            if version is None:
                cur.execute(self._q("SELECT data FROM directories WHERE hub = ? ORDER BY version DESC LIMIT 1"), (hub,))
            else:
                cur.execute(self._q("SELECT data FROM directories WHERE hub = ? AND version = ?"), (hub, version))
            row = cur.fetchone()
        return bytes(row[0]) if row else None

    def directory_versions(self, hub: str) -> list[tuple[int, str, float]]:
        """(version, digest, when applied) of each directory ``hub`` applied, oldest first."""
        with self._tx() as cur:
            cur.execute(self._q("SELECT version, digest, applied FROM directories WHERE hub = ? ORDER BY version"),
                        (hub,))
            return [(int(r[0]), str(r[1]), float(r[2])) for r in cur.fetchall()]
