"""The state store's schema, as numbered steps applied once each, and how they are applied safely
from any number of processes starting at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from broker.core.errors import ConfigError
from broker.i18n import N_

Migration = tuple[int, str, Sequence[str]]
"""(number, description, statements); ``{blob}`` in a statement is the database's bytes type."""

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "claims, verdicts, audit log, checkpoints, message bytes, handed ids", (
        """CREATE TABLE IF NOT EXISTS hops (
            hub TEXT NOT NULL, digest TEXT NOT NULL, target TEXT NOT NULL,
            state TEXT NOT NULL, owner TEXT NOT NULL, lease_until DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hub, digest, target))""",
        """CREATE TABLE IF NOT EXISTS verdicts (
            hub TEXT NOT NULL, digest TEXT NOT NULL, document_id TEXT NOT NULL, sender TEXT NOT NULL,
            verdict TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hub, digest))""",
        # append-only, hash-chained per hub (broker/core/auditlog.py hashes, broker/ops/audit.py checks)
        """CREATE TABLE IF NOT EXISTS audit (
            hub TEXT NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
            document_id TEXT NOT NULL, digest TEXT NOT NULL, body TEXT NOT NULL, prev TEXT NOT NULL,
            hash TEXT NOT NULL, PRIMARY KEY (hub, seq))""",
        "CREATE INDEX IF NOT EXISTS audit_doc ON audit (document_id)",
        "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",  # reports read a period
        """CREATE TABLE IF NOT EXISTS checkpoints (
            hub TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
            token TEXT NOT NULL, PRIMARY KEY (hub, seq))""",
        # the exact signed bytes of each message a hub accepted or refused, for evidence bundles
        "CREATE TABLE IF NOT EXISTS messages (digest TEXT PRIMARY KEY, data {blob} NOT NULL)",
        """CREATE TABLE IF NOT EXISTS handed (
            agency TEXT NOT NULL, message_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (agency, message_id))""",
    )),
    (2, "one set of bytes per document: (hub, sender, DocumentId, business type) -> digest", (
        """CREATE TABLE IF NOT EXISTS documents (
            hub TEXT NOT NULL, sender TEXT NOT NULL, document_id TEXT NOT NULL, business TEXT NOT NULL,
            digest TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hub, sender, document_id, business))""",
    )),
    (3, "RFC 3161 time-stamps of audit checkpoints", (
        "CREATE TABLE IF NOT EXISTS timestamps (hub TEXT NOT NULL, seq BIGINT NOT NULL, tsr {blob} NOT NULL, "
        "PRIMARY KEY (hub, seq))",
    )),
    (4, "the adapters keep what they handed over in files of their own (adapters/localdb.py)", (
        "DROP TABLE IF EXISTS handed",
    )),
    (5, "the signed directories a hub applied, as received", (
        """CREATE TABLE IF NOT EXISTS directories (
            hub TEXT NOT NULL, version BIGINT NOT NULL, digest TEXT NOT NULL, data {blob} NOT NULL,
            applied DOUBLE PRECISION NOT NULL, PRIMARY KEY (hub, version))""",
    )),
    (6, "one set of bytes per status: (hub, sender, document answered, status code) -> digest", (
        """CREATE TABLE IF NOT EXISTS statuses (
            hub TEXT NOT NULL, sender TEXT NOT NULL, response_for TEXT NOT NULL, status TEXT NOT NULL,
            digest TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hub, sender, response_for, status))""",
    )),
)
"""The schema as numbered steps, applied in order and each once (table ``schema_version``).

Version 1 uses ``IF NOT EXISTS`` so that a database made before versioning is adopted as it is.
A new step is appended with the next number; a released step is never edited."""

MIGRATION_LOCK = 0x6C74_0001
"""PostgreSQL advisory lock key that serializes schema changes across processes and hosts."""




def apply(cur: Any, migrations: Sequence[Migration], *, postgres: bool, blob: str, q: Callable[[str], str]) -> int:
    """Bring the schema up to the last of ``migrations`` inside the caller's transaction ``cur``,
    which first takes a lock (PostgreSQL: an advisory lock; SQLite: ``BEGIN IMMEDIATE``, the
    database's write lock), so a second process waits, then finds the work done.  Returns the
    version reached; a database newer than ``migrations`` is refused."""
    latest = max((n for n, _, _ in migrations), default=0)
    if postgres:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    else:
        cur.execute("BEGIN IMMEDIATE")
    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)")
    cur.execute("SELECT MAX(version) FROM schema_version")
    current = int(cur.fetchone()[0] or 0)
    if current > latest:
        raise ConfigError(N_("the state store's schema is at version {current}, newer than this lienthong knows "
                             "({latest}): upgrade lienthong"), current=current, latest=latest)
    for number, description, statements in sorted(migrations):
        if number <= current:
            continue
        for stmt in statements:
            cur.execute(stmt.replace("{blob}", blob))
        cur.execute(q("INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)"),
                    (number, description, time.time()))
        current = number
    return current
