"""Opening a SQLite database the one way lienthong does, for the hub's state store and the adapters'
small local databases: WAL (readers never block the writer), a busy timeout, and a switch to WAL
that waits instead of failing when several processes open a new file at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Literal


def connect(path: Path, *, timeout: float = 10.0,
            isolation_level: Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] | None = "IMMEDIATE",
            checkpoint_here: bool = True) -> sqlite3.Connection:
    """A connection usable from several threads (the caller serializes its use).  With
    ``checkpoint_here`` False its commits never run a checkpoint: a :class:`Checkpointer` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=isolation_level)
    _wal(conn, timeout)
    conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes (WAL)
    if not checkpoint_here:
        conn.execute("PRAGMA wal_autocheckpoint=0")
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


class Checkpointer:
    """Copies a database's write-ahead log back into it from a thread of its own, for a writer
    whose connections have ``wal_autocheckpoint`` off (``connect(..., checkpoint_here=False)``):
    SQLite would otherwise make every thousandth commit wait for a checkpoint and its fsync, a
    stall of the hub's message loop.  Passive checkpoints never block the writer."""

    def __init__(self, path: Path, *, every: float = 1.0, timeout: float = 10.0) -> None:
        self.path, self.every, self.timeout = path, every, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checkpoint {path.name}", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.every):
            try:
                conn = conn or connect(self.path, timeout=self.timeout)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:  # the next round tries again (a locked or vanished file)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        """Stop the thread; a last checkpoint is made by the writer's close (SQLite's own)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout)
