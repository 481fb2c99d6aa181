"""The adapters' small local databases (SQLite, one file each): what an agency client already
handed over, what the gateway received and sent, what the folder drop sent.  One way to open
and use them, and the one store every adapter shares: :class:`HandedOver`."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker import sqlite


class LocalDB:
    """A SQLite file with its schema; usable from several threads (one lock serializes them)."""

    def __init__(self, path: Path, schema: Sequence[str], upgrades: Sequence[str] = ()) -> None:
        """``schema``: idempotent statements (``CREATE ... IF NOT EXISTS``); ``upgrades``: columns
        added since (``ALTER TABLE ... ADD COLUMN``), each skipped where a file has it already."""
        self._db = sqlite.connect(path, isolation_level=None)  # transactions are explicit (tx)
        self._lock = threading.Lock()
        with self.tx() as db:
            for statement in schema:
                db.execute(statement)
            for statement in upgrades:
                try:
                    db.execute(statement)
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, tuple(args)).fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()


class HandedOver:
    """The ids of the messages an agency client already handed to its caller, so that a twin (the
    broker redelivering, a hub publishing again after a crash) is dropped, never handed twice."""

    def __init__(self, path: Path) -> None:
        self._db = LocalDB(path, ["CREATE TABLE IF NOT EXISTS handed (agency TEXT NOT NULL, "
                                  "message_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, "
                                  "PRIMARY KEY (agency, message_id))"])

    def mark(self, agency: str, message_id: str) -> bool:
        """Record that ``message_id`` was handed to ``agency``; False if it already was."""
        with self._db.tx() as db:
            cur = db.execute("INSERT INTO handed (agency, message_id, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                             (agency, message_id, time.time()))
            return cur.rowcount == 1

    def seen(self, agency: str, message_id: str) -> bool:
        return bool(self._db.rows("SELECT 1 FROM handed WHERE agency = ? AND message_id = ?", (agency, message_id)))

    def close(self) -> None:
        self._db.close()
