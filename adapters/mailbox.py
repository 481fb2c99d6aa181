"""The gateway's mailbox: what each agency received (taken from its inbox) and what it sent.

Received messages are taken from the agency's broker inbox into this store when the agency asks
(acked on the broker only once stored here), and stay until the agency says it has them: their
transfer status goes ``new`` -> ``taken`` (being processed) -> ``done``, or ``failed`` (the
document system could not take it; it is offered again).  Hub receipts and business statuses
about what the agency sent are kept here too, so the sent list can say where each document is.
One SQLite file; the REST routes (:mod:`adapters.gateway`) and the national axis routes
(:mod:`adapters.vxp`) share it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.core import errors, receipts
from broker.core.edxml import Message
from broker.i18n import N_

from .localdb import LocalDB
from .sdk import InboxItem

TRANSFER_STATUSES = ("new", "taken", "done", "failed")
PENDING = ("new", "taken", "failed")
"""Transfer statuses of a message the agency has not yet taken for good."""


@dataclass(frozen=True)
class ReceivedItem:
    """One received message as the mailbox lists it."""

    message_id: str
    kind: str
    """``document``, ``status`` or ``receipt``."""
    document_id: str
    sender: str
    status_code: str
    received: float
    transfer: str
    updated: float


@dataclass(frozen=True)
class Sent:
    """One message the agency sent, with what came back about it."""

    message_id: str
    kind: str
    document_id: str
    recipients: tuple[str, ...]
    sent: float
    title: str
    notation: str
    receipts: tuple[tuple[receipts.Receipt, float], ...]
    """The hub receipts about it (accepted, delivered, rejected) with when each came, oldest first."""
    statuses: tuple[tuple[str, str, float], ...]
    """(status code, from agency, when received) of the business statuses about it, oldest first."""


class Mailbox:
    def __init__(self, path: Path) -> None:
        self._db = LocalDB(path, [
            """CREATE TABLE IF NOT EXISTS received (agency TEXT, message_id TEXT, kind TEXT,
                document_id TEXT, sender TEXT, status_code TEXT, about TEXT, received REAL, transfer TEXT,
                body BLOB, PRIMARY KEY (agency, message_id))""",
            """CREATE TABLE IF NOT EXISTS sent (agency TEXT, message_id TEXT, document_id TEXT,
                recipients TEXT, sent REAL, PRIMARY KEY (agency, message_id))""",
            # signed requests already served (the national axis protocol refuses a replay)
            "CREATE TABLE IF NOT EXISTS requests (digest TEXT PRIMARY KEY, at REAL)",
        ], upgrades=[
            "ALTER TABLE received ADD COLUMN updated REAL",
            "ALTER TABLE sent ADD COLUMN kind TEXT NOT NULL DEFAULT 'document'",
            "ALTER TABLE sent ADD COLUMN title TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE sent ADD COLUMN notation TEXT NOT NULL DEFAULT ''",
        ])

    # -- received ------------------------------------------------------------------------------

    def add_received(self, agency: str, item: InboxItem, message: Message | None) -> None:
        """Keep an inbox item: a hub receipt (``message`` None) or a checked edXML message."""
        if message is None:
            r = receipts.read_bytes(item.body)
            kind, document_id, sender, code, about = ("receipt", r.document_id, r.hub,
                                                      r.kind + (f" {r.code}" if r.code else ""), r.document_sha256)
        else:
            kind, document_id, sender, code, about = (message.kind, message.document_id, message.sender.organ_id,
                                                      message.status_code or "", "")
        now = time.time()
        with self._db.tx() as db:
            db.execute("INSERT OR IGNORE INTO received (agency, message_id, kind, document_id, sender, status_code, "
                       "about, received, transfer, body, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (agency, item.message_id, kind, document_id, sender, code, about, now, "new", item.body, now))

    def received(self, agency: str, *, kinds: tuple[str, ...], transfer: tuple[str, ...] | None = None,
                 since: float | None = None, until: float | None = None) -> list[ReceivedItem]:
        """The agency's received messages of ``kinds``, oldest first, optionally only those in a
        ``transfer`` status or received in ``[since, until)``."""
        sql = ("SELECT message_id, kind, document_id, sender, status_code, received, transfer, "
               f"COALESCE(updated, received) FROM received WHERE agency = ? AND kind IN ({_marks(kinds)})")
        args: list[Any] = [agency, *kinds]
        if transfer:
            sql += f" AND transfer IN ({_marks(transfer)})"
            args += transfer
        for clause, value in ((" AND received >= ?", since), (" AND received < ?", until)):
            if value is not None:
                sql += clause
                args.append(value)
        return [ReceivedItem(r[0], r[1], r[2], r[3], r[4] or "", r[5], r[6], r[7])
                for r in self._db.rows(sql + " ORDER BY received, message_id", args)]

    def count(self, agency: str, kind: str) -> int:
        """Received messages of ``kind`` the agency has not yet taken for good."""
        rows = self._db.rows(f"SELECT COUNT(*) FROM received WHERE agency = ? AND kind = ? AND transfer IN "
                             f"({_marks(PENDING)})", (agency, kind, *PENDING))
        return int(rows[0][0])

    def body(self, agency: str, message_id: str) -> bytes:
        rows = self._db.rows("SELECT body FROM received WHERE agency = ? AND message_id = ?", (agency, message_id))
        if not rows:
            raise errors.NotFound(N_("no received message {message_id!r} for agency {agency!r}"), message_id=message_id,
                                  agency=agency)
        return bytes(rows[0][0])

    def set_transfer(self, agency: str, message_id: str, status: str) -> None:
        if status not in TRANSFER_STATUSES:
            raise errors.UsageError(N_("transfer status must be one of {statuses}"),
                                    statuses=', '.join(TRANSFER_STATUSES))
        with self._db.tx() as db:
            cur = db.execute("UPDATE received SET transfer = ?, updated = ? WHERE agency = ? AND message_id = ? "
                             "AND kind != 'receipt'", (status, time.time(), agency, message_id))
        if cur.rowcount == 0:
            raise errors.NotFound(N_("no received message {message_id!r} for agency {agency!r}"), message_id=message_id,
                                  agency=agency)

    # -- sent ----------------------------------------------------------------------------------

    def add_sent(self, agency: str, message_id: str, message: Message) -> None:
        with self._db.tx() as db:
            db.execute("INSERT OR IGNORE INTO sent (agency, message_id, document_id, recipients, sent, kind, title, "
                       "notation) VALUES (?,?,?,?,?,?,?,?)",
                       (agency, message_id, message.document_id, json.dumps(message.recipient_ids), time.time(),
                        message.kind, message.subject, message.code))

    def sent(self, agency: str, kind: str = "document") -> list[Sent]:
        rows = self._db.rows("SELECT message_id, document_id, recipients, sent, title, notation FROM sent "
                             "WHERE agency = ? AND kind = ? ORDER BY sent, message_id", (agency, kind))
        out = []
        for mid, doc_id, recips, at, title, notation in rows:
            rec = self._db.rows("SELECT body, received FROM received WHERE agency = ? AND kind = 'receipt' "
                                "AND about = ? ORDER BY received", (agency, mid))
            sts = self._db.rows("SELECT status_code, sender, received FROM received WHERE agency = ? AND "
                                "kind = 'status' AND document_id = ? ORDER BY received", (agency, doc_id))
            out.append(Sent(mid, kind, doc_id, tuple(json.loads(recips)), at, title, notation,
                            tuple((receipts.read_bytes(bytes(r[0])), r[1]) for r in rec),
                            tuple((s[0], s[1], s[2]) for s in sts)))
        return out

    # -- replays -------------------------------------------------------------------------------

    def first_use(self, digest: str, *, keep_seconds: float) -> bool:
        """Record a signed request; False if it was recorded before (a replay).  Records older
        than ``keep_seconds`` are forgotten: the timestamp window refuses those requests anyway."""
        now = time.time()
        with self._db.tx() as db:
            db.execute("DELETE FROM requests WHERE at < ?", (now - keep_seconds,))
            cur = db.execute("INSERT OR IGNORE INTO requests (digest, at) VALUES (?, ?)", (digest, now))
            return cur.rowcount == 1


def _marks(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values))
