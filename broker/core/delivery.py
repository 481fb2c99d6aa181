"""What a recipient checks before it takes a message from its inbox: the relay's last hub is not
trusted because it put the message there.

A document or status must carry the sender's valid signature (judged when the entry hub accepted
it) and a trace whose every record verifies, that starts at the sender's hub, runs along the
topology, and ends with the recipient's own hub delivering it to this agency, which the message
names.  A hub receipt must be signed by a hub the trust store knows, and be about this agency's
own message.  The SDK (and so the gateway and the folder drop) runs this on every message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from broker.core import receipts, wire
from broker.core.errors import SenderNotAllowed, TraceInvalid
from broker.core.hoprecords import check_path, parse_time, routed_to, verify_trace
from broker.core.topology import Topology
from broker.core.trust import TrustSource
from broker.core.validation import check
from broker.core.wire import message_id
from broker.i18n import N_


@dataclass(frozen=True)
class DeliveryCheck:
    trust: TrustSource
    """The recipient's trust store (one that follows its directory, or a fixed one)."""
    topology: Topology
    hub_certs: Mapping[str, x509.Certificate]

    def __call__(self, agency: str, kind: str, body: bytes, trace: Sequence[str]) -> None:
        """Raise a :class:`~broker.core.errors.RejectedInput` (with its code) if ``agency`` must not
        take this message."""
        if kind == wire.Kind.RECEIPT:
            receipt = receipts.verify(body, self.trust.current()).receipt
            if receipt.sender != agency:
                raise SenderNotAllowed(N_("a receipt about a message of {sender!r} reached {agency!r}"),
                                       sender=receipt.sender, agency=agency)
            return
        records = verify_trace(trace, self.hub_certs, message_id(body))
        if not records:
            raise TraceInvalid(N_("the message reached the inbox with no hop record"))
        last, here = records[-1], self.topology.agency(agency).hub
        routed = {self.topology.current_code(code) for code in routed_to(last, f"inbox:{agency}")}
        if last.hub != here or agency not in routed:
            raise TraceInvalid(N_("the last hop record does not deliver this message to {agency}"), agency=agency)
        message = check(body, trust=self.trust.current(), topology=self.topology, at=parse_time(records[0].at)).message
        if agency not in {self.topology.current_code(code) for code in message.recipient_ids}:
            raise TraceInvalid(N_("the message is not addressed to {agency}"), agency=agency)
        first_hub = self.topology.agency(message.sender.organ_id).hub
        if len(records) > 1:
            check_path(records[:-1], self.topology.neighbours, first_hub, here)
        elif records[0].hub != first_hub:
            raise TraceInvalid(N_("the first hop is not the sender's own hub"))
