"""Entries of a hub's audit log and the hash that chains them (the store keeps them; ops checks them).

Each entry's hash covers the previous entry's hash and its own fields, so changing or removing an
entry breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class AuditEntry:
    """What a hub appends to its audit log: a hop record token, a receipt, a checkpoint note."""

    kind: str  # "hop", "receipt"
    document_id: str
    body: str


@dataclass(frozen=True)
class AuditRow:
    """An entry as stored: its place in the hub's log and its chained hash."""

    hub: str
    seq: int
    at: float
    kind: str
    document_id: str
    digest: str
    body: str
    prev: str
    hash: str


def entry_hash(row: AuditRow) -> str:
    payload = json.dumps({"hub": row.hub, "seq": row.seq, "at": repr(row.at), "kind": row.kind,
                          "document_id": row.document_id, "digest": row.digest, "body": row.body},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((row.prev + "\n" + payload).encode()).hexdigest()
