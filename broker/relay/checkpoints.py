"""Signed checkpoints of a hub's audit log: the worker signs the log's head every so often and
at stop, so a cut or a rewrite before a checkpoint is detected (``lienthong audit verify-log``)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.core.hoprecords import HopRecord, sign_record
from broker.core.signer import SigningKey
from broker.relay.store import SqlStore


def checkpoint(store: SqlStore, hub: str, key: SigningKey) -> tuple[int, str, str] | None:
    """Sign the current head of ``hub``'s log; returns (seq, hash, signed token) or None for an
    empty log.  The worker sends the token to its neighbours, which witness it."""
    head = store.audit_head(hub)
    if head is None:
        return None
    at = datetime.now(UTC).timestamp()
    token = sign_record(HopRecord(hub=hub, at=repr(at), digest=head.hash, document_id="",
                                  verdict="checkpoint", extra={"seq": str(head.seq)}), key)
    store.add_checkpoint(hub, head.seq, head.hash, at, token)
    return head.seq, head.hash, token
