"""Opening a SQLite database the one way lienthong does, for the hub's state store and the adapters'
small local databases: WAL (readers never block the writer), a busy timeout, and a switch to WAL
that waits instead of failing when several processes open a new file at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal


def connect(path: Path, *, timeout: float = 10.0,
            isolation_level: Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] | None = "IMMEDIATE") -> sqlite3.Connection:
    """A connection usable from several threads (the caller serializes its use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=isolation_level)
    _wal(conn, timeout)
    conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes (WAL)
    return conn


def _wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch a new database to WAL.  The switch needs the database to itself and SQLite answers
    "locked" at once, without its busy timeout, while another connection (a second worker, the
    SDK beside the gateway) opens the same new file: wait for it like any other lock.  Once a
    database is in WAL mode the pragma is a no-op that takes no lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
