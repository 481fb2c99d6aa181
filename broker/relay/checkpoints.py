"""Signed checkpoints of a hub's audit log: the worker signs the log's head every so often and
at stop, so a cut or a rewrite before a checkpoint is detected (``lienthong audit verify-log``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from broker.core import wire
from broker.core.errors import LienthongError
from broker.core.hoprecords import HopRecord, RecordKind, sign_record
from broker.core.signer import SigningKey
from broker.core.topology import Topology
from broker.relay import timestamp
from broker.relay.store import SqlStore
from broker.relay.transport import Outgoing, Publisher


def checkpoint(store: SqlStore, hub: str, key: SigningKey) -> tuple[int, str, str] | None:
    """Sign the current head of ``hub``'s log; returns (seq, hash, signed token) or None for an
    empty log.  The worker sends the token to its neighbours, which witness it."""
    head = store.audit_head(hub)
    if head is None:
        return None
    at = datetime.now(UTC).timestamp()
    token = sign_record(HopRecord(hub=hub, at=repr(at), digest=head.hash, document_id="",
                                  verdict=RecordKind.CHECKPOINT, extra={"seq": str(head.seq)}), key)
    store.add_checkpoint(hub, head.seq, head.hash, at, token)
    return head.seq, head.hash, token


def hand_to_neighbours(publishers: Mapping[str, Publisher], topology: Topology, hub: str, seq: int, token: str,
                       log: Any) -> None:
    """Publish a signed checkpoint to every neighbour, which witnesses it (``Hop._witness``)."""
    body = token.encode()
    message = Outgoing(wire.link_exchange(hub), "", body, wire.message_id(body), wire.names(topology).link_user(hub),
                       {wire.H_KIND: wire.Kind.CHECKPOINT})

    def confirmed(neighbour: str) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            if not ok:
                log.warning("checkpoint not handed to a neighbour", neighbour=neighbour, seq=seq)
        return done

    for n in topology.neighbours(hub):
        publishers[n].publish(message, confirmed(n))


def time_stamp(store: SqlStore, hub: str, url: str, seq: int, token: str, log: Any) -> None:
    """Have the RFC 3161 authority at ``url`` stamp a checkpoint and keep its answer, once it
    verified against the request (run off the message loop: an authority's answer must not hold
    it).  An answer that does not verify is not kept: it is an alert."""
    try:
        store.add_timestamp(hub, seq, timestamp.stamp(url, token.encode()))
    except LienthongError as exc:
        log.warning("alert", kind="time-stamp-failed", subject=url, detail=exc.message, seq=seq)
