"""What a recipient checks before it takes a message from its inbox: the relay's last hub is not
trusted because it put the message there.

A document or status must carry the sender's valid signature (judged when the entry hub accepted
it) and a trace whose every record verifies (its hub's certificate judged now, as hubs judge it),
that starts at the sender's hub, runs along the topology, and ends with the recipient's own hub
delivering it to this agency, which the message names; the entry hub's time is read from the
trace only once all of that holds.  A hub receipt must be signed by a hub the trust store knows,
be about this agency's own message, and its ``lt-issued`` record, when it has one, must be that
hub's record of these bytes for this agency.  The SDK (and so the gateway and the folder drop)
runs this on every message, with the trust store hubs use (:mod:`broker.relay.livetrust`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from broker.core import edxml, receipts, wire
from broker.core.errors import SenderNotAllowed, TraceInvalid
from broker.core.hoprecords import (
    HopRecord,
    RecordKind,
    check_path,
    hub_certificate,
    parse_time,
    routed_to,
    verify_record,
    verify_trace,
)
from broker.core.sealing import VerifiedRoots
from broker.core.topology import Topology
from broker.core.trust import TrustSource, TrustStore
from broker.core.validation import When, check
from broker.core.wire import message_id
from broker.i18n import N_


@dataclass(frozen=True)
class DeliveryCheck:
    trust: TrustSource
    """The recipient's trust store (one that follows its directory, or a fixed one)."""
    topology: Topology
    hub_certs: Mapping[str, x509.Certificate]
    """Every hub's certificate, bound to its hub (judged by the trust store at each use)."""
    roots: VerifiedRoots = field(default_factory=VerifiedRoots, init=False, repr=False, compare=False)
    """The batch roots this check has verified (:mod:`broker.core.sealing`)."""

    def __call__(self, agency: str, kind: str, body: bytes, trace: Sequence[str], issued: str | None = None) -> None:
        """Raise a :class:`~broker.core.errors.RejectedInput` (with its code) if ``agency`` must not
        take this message; ``issued``: a receipt's ``lt-issued`` header, if it came with one."""
        trust = self.trust.current()
        if kind == wire.Kind.RECEIPT:
            self._receipt(agency, body, issued, trust)
            return
        records = verify_trace(trace, self.hub_certs, message_id(body), trust=trust, roots=self.roots)
        if not records:
            raise TraceInvalid(N_("the message reached the inbox with no hop record"))
        last, here = records[-1], self.topology.agency(agency).hub
        routed = {self.topology.current_code(code) for code in routed_to(last, f"inbox:{agency}")}
        if last.hub != here or agency not in routed:
            raise TraceInvalid(N_("the last hop record does not deliver this message to {agency}"), agency=agency)
        message = check(body, trust=trust, topology=self.topology, at=self._entry_time(records, here)).message
        if agency not in {self.topology.current_code(code) for code in message.recipient_ids}:
            raise TraceInvalid(N_("the message is not addressed to {agency}"), agency=agency)

    def _entry_time(self, records: list[HopRecord], here: str) -> When:
        """The entry hub's time, read once the trace is shown to start at the hub of the sender the
        message names and to run along the topology to ``here``."""

        def at(message: edxml.Message) -> datetime:
            first_hub = self.topology.agency(message.sender.organ_id).hub
            if len(records) > 1:
                check_path(records[:-1], self.topology.neighbours, first_hub, here)
            elif records[0].hub != first_hub:
                raise TraceInvalid(N_("the first hop is not the sender's own hub"))
            try:
                return parse_time(records[0].at)
            except ValueError:
                raise TraceInvalid(N_("the entry hub's record has no valid time")) from None

        return at

    def _receipt(self, agency: str, body: bytes, issued: str | None, trust: TrustStore) -> None:
        receipt = receipts.verify(body, trust).receipt
        if receipt.sender != agency:
            raise SenderNotAllowed(N_("a receipt about a message of {sender!r} reached {agency!r}"),
                                   sender=receipt.sender, agency=agency)
        if issued is None:
            return
        rec = verify_record(issued, hub_certificate(self.hub_certs, receipt.hub, trust), self.roots)
        if (rec.hub, rec.verdict, rec.digest, rec.recipients) != (receipt.hub, RecordKind.RECEIPT, message_id(body),
                                                                  (agency,)):
            raise TraceInvalid(N_("the receipt's lt-issued record is not its hub's record of this receipt for this "
                                  "agency"))
