"""What a hop takes and what it decides, as data: the message as it came in (:class:`Inbound`),
the copies to publish (:class:`Copy`) and the decision (:class:`Outcome`, :class:`Verdict`).

:mod:`broker.core.hop` decides; the hub worker's pipeline (:mod:`broker.relay.pipeline`) carries
the decision out and its hooks watch it, knowing only these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from broker.core.auditlog import AuditEntry
from broker.core.routing import Target
from broker.core.wire import H_ISSUED, H_TRACE, handed_in_by


class Verdict(StrEnum):
    """What a hop decided for a message."""

    FORWARDED = "forwarded"
    """Sent on towards its recipients' hubs (receipts passing through included)."""
    DELIVERED = "delivered"
    """Put into the inboxes of this hub's agencies."""
    REJECTED = "rejected"
    """Refused: parked here, the sender told."""
    WITNESSED = "witnessed"
    """A neighbour's audit-log checkpoint, countersigned into this hub's log."""


@dataclass(frozen=True)
class Inbound:
    body: bytes
    headers: Mapping[str, Any]
    """The headers the hub may act on (:func:`broker.core.wire.trusted_headers`)."""
    exchange: str
    """The exchange the message was published to (says who handed it in)."""

    @property
    def origin(self) -> str:
        """``agency:<code>``, ``link:<hub>`` or ``''``: who handed us the message."""
        return handed_in_by(self.exchange, self.headers)


@dataclass(frozen=True)
class Copy:
    target: Target
    body: bytes
    headers: dict[str, Any]
    claim: str
    """Key under which publishing this copy is made idempotent (with the hub and digest)."""
    bundled: bool = False
    """A receipt this hub issued for another hub's agency: it may wait a moment for others and
    leave with them in one bundle (:meth:`Hop.bundle`)."""


@dataclass(frozen=True)
class Outcome:
    digest: str
    document_id: str
    verdict: Verdict
    copies: tuple[Copy, ...]
    code: str = ""
    reason: str = ""
    sender: str = ""
    record: str = ""
    recipients: tuple[str, ...] = ()
    entries: tuple[AuditEntry, ...] = ()
    """What goes into the hub's audit log with the claims (hop record, receipts issued)."""
    message: bytes | None = None
    """The signed bytes to keep as evidence (at the sender's hub, the recipient's hub, on rejection)."""
    standing: bool = True
    """The verdict holds for every later copy of these bytes.  False for a refusal that depends on
    who handed them in (another account, a bad trace): the genuine sender is still judged afresh."""
    identity: tuple[str, str, str] | None = None
    """(sender, DocumentId, business type) of an accepted document: one document has one set of
    bytes, so a second message with this identity and other bytes is refused (``DOCUMENT_ID_REUSED``)."""
    status: tuple[str, str, str] | None = None
    """(sender, the document answered, status code) of an accepted status
    (:func:`broker.core.hop.status_identity`): a second status with this identity and other bytes
    is refused (``STATUS_REUSED``), never delivered twice."""
    exactly_once: bool = True
    """Publish through claims in the state store.  False for a receipt on its way through this hub
    (the hub that puts it into an inbox claims it there, so a twin on the way does no harm)."""
    legacy: tuple[str, ...] = ()
    """What of an accepted message used SHA-1, allowed only by its sender's ``legacy_sha1``
    policy: the worker raises a ``sha1-accepted`` alert for it."""

    def with_tokens(self, tokens: Mapping[str, str]) -> Outcome:
        """This outcome with every string of ``tokens`` replaced by its value where a hop record
        goes (the record, the copies' ``lt-trace`` and ``lt-issued``, the audit entries): what
        :class:`broker.core.hoprecords.RecordBatch` signs once a batch is judged.  The copies'
        headers are put right in place: the hop made them for this outcome alone, and a batch
        is resolved before anything reads them."""
        for c in self.copies:  # a parked copy keeps the headers it came with, whatever they hold
            h = c.headers
            trace = h.get(H_TRACE)
            if isinstance(trace, list) and trace and isinstance(trace[-1], str) and trace[-1] in tokens:
                trace[-1] = tokens[trace[-1]]  # this hop's record is the trace's last
            if isinstance(issued := h.get(H_ISSUED), str) and issued in tokens:
                h[H_ISSUED] = tokens[issued]
        entries = tuple(replace(e, body=tokens[e.body]) if e.body in tokens else e for e in self.entries)
        return replace(self, record=tokens.get(self.record, self.record), entries=entries)
