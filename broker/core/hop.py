"""The hop: what a hub decides for one inbound message.  Pure: no broker, no database.

:meth:`Hop.process` judges a message (parse, schema, signature, policy, route) and writes the
evidence (a signed hop record, transport receipts) into an :class:`Outcome`: the copies to
publish, each with the claim key that makes publishing it idempotent.  The hub worker's pipeline
(:mod:`broker.relay.pipeline`) claims them in the state store, publishes them with confirms and
acks.  What only the store can know (the document id is held by other bytes) or only time tells
(the retries ran out) is turned into a refusal by :meth:`Hop.refuse`.

Who handed a message in is known from the exchange it arrived through
(:func:`broker.core.wire.handed_in_by`): each broker account may publish only to its own entry
exchange (``broker.relay.layout``):

- ``in.<code>``: an agency, the first hop; it may only send as itself;
- ``in.link.<hub>``: a neighbouring hub forwarding; its signed trace must end
  with a record of that hub naming this hub as a target;
- ``ingress``: our own retry tier re-injecting a message (only the hub can
  write there); the original entry is carried in ``lt-origin``.

Nothing a hop uses comes from a record it has not verified: the trace a neighbour hands over is
checked whole (every record's signature, its hub's certificate as the trust store judges it now,
the chain, these bytes, a path of the topology from the sender's hub) before the entry hub's
time is read from it, and every ``lt-issued`` record is verified, at the hub that puts its
receipt into an inbox too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography import x509

from broker.core import edxml, receipts
from broker.core.auditlog import AuditEntry
from broker.core.errors import LienthongError, RejectedInput, SenderNotAllowed, TraceInvalid
from broker.core.hoprecords import (
    HopRecord,
    RecordBatch,
    RecordKind,
    check_path,
    hub_certificate,
    parse_record,
    parse_time,
    routed_to,
    sign_record,
    token_digest,
    trace_of,
    utc_now,
    verify_record,
    verify_trace,
)
from broker.core.outcome import Copy, Inbound, Outcome, Verdict
from broker.core.parsing import DEFAULT_LIMITS, ParseLimits
from broker.core.routing import PARKING, Target, TargetKind, next_hop, next_hops
from broker.core.sealing import VerifiedRoots
from broker.core.signer import SigningKey
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import When, check
from broker.core.verifier import DEFAULT_POLICY, VerifyPolicy
from broker.core.wire import (
    H_CODE,
    H_HUB,
    H_ISSUED,
    H_KIND,
    H_ORIGIN,
    H_REASON,
    H_RECIPIENTS,
    H_REPLAY,
    H_TO,
    H_TRACE,
    Kind,
    agency_of,
    hub_of,
    kind_of,
    message_id,
    without_broker_headers,
)
from broker.i18n import N_


@dataclass
class Hop:
    hub: str
    topology: Topology
    trust: TrustStore
    key: SigningKey
    hub_certs: Mapping[str, x509.Certificate]
    limits: ParseLimits = DEFAULT_LIMITS
    policy: VerifyPolicy = DEFAULT_POLICY
    receipts: bool = True
    """Issue transport receipts and keep audit entries (off only to measure what they cost)."""
    bundles: bool = True
    """Receipts for other hubs' agencies leave in bundles (off: each alone, to measure what bundles save)."""
    neighbours: frozenset[str] = field(init=False)
    _batch: RecordBatch | None = field(default=None, init=False, repr=False, compare=False)
    roots: VerifiedRoots = field(default_factory=VerifiedRoots, init=False, repr=False, compare=False)
    """The batch roots this hub has verified (:mod:`broker.core.sealing`)."""

    def __post_init__(self) -> None:
        self.neighbours = frozenset(self.topology.neighbours(self.hub))

    @contextmanager
    def sealing(self) -> Iterator[RecordBatch]:
        """The records written in the block are signed together as it ends, one signature for a
        batch of deliveries (:mod:`broker.core.sealing`); pass each outcome judged in it through
        the batch's ``resolve``, which puts the tokens in place of their placeholders."""
        batch = self._batch = RecordBatch(self.key)
        try:
            yield batch
        finally:
            self._batch = None
        batch.seal()

    def _sign(self, record: HopRecord) -> str:
        """``record``'s token now, or its placeholder in the batch being judged (:meth:`sealing`)."""
        return self._batch.add(record) if self._batch is not None else sign_record(record, self.key)

    def with_trust(self, trust: TrustStore) -> Hop:
        """This hub judging with another snapshot of its trust store (a new CRL, say)."""
        return replace(self, trust=trust)

    # -- entry point -----------------------------------------------------------

    def process(self, msg: Inbound) -> Outcome:
        digest = message_id(msg.body)
        origin = msg.origin
        document_id, sender = "", ""
        recipients: tuple[str, ...] = ()
        try:
            kind = kind_of(msg.headers)
            if kind == Kind.CHECKPOINT:
                return self._witness(msg, digest, origin)
            if kind == Kind.RECEIPT:
                return self._relay_receipt(msg, digest, origin)
            if kind == Kind.BUNDLE:
                return self._relay_bundle(msg, digest, origin)
            trace = trace_of(msg.headers)
            records = self._verified_trace(origin, trace, digest)  # before anything is read from it
            checked = check(msg.body, trust=self.trust, topology=self.topology,
                            limits=self.limits, policy=self.policy, at=self._entry_time(records),
                            digest=digest)
            m = checked.message
            document_id, sender = m.document_id, m.sender.organ_id
            recipients = self._admit(origin, sender, m.recipient_ids, records)
            naming: dict[str, Any] = ({"status": status_identity(m)} if m.kind == "status" else
                                     {"identity": (sender, document_id, m.business.doc_type if m.business else "0")})
            if checked.legacy:
                naming["legacy"] = checked.legacy
            return self._forward(msg.body, digest, document_id, sender, recipients, trace, m.kind, naming)
        except RejectedInput as exc:
            # tell whoever handed the message in: the publishing agency, else the From agency
            return self._reject(msg, digest, document_id, self._agency(origin) or sender, recipients, exc)

    # -- policy ----------------------------------------------------------------

    def _agency(self, origin: str) -> str:
        """The directory's agency whose account handed a message in, else ``''``."""
        agency = agency_of(origin)
        return agency if agency in self.topology.agencies else ""

    def _verified_trace(self, origin: str, trace: list[str], digest: str) -> list[HopRecord]:
        """The records of a trace a neighbour handed over, each verified (signature, its hub's
        certificate judged now, chain, these bytes), the last one that neighbour's forwarding the
        message here; ``[]`` for what an agency hands in (which carries no trace)."""
        if not origin.startswith("link:"):
            if trace:
                raise TraceInvalid(N_("an agency cannot send a message that already carries a trace"))
            return []
        neighbour = hub_of(origin)
        if neighbour not in self.neighbours:
            raise SenderNotAllowed(N_("hub {neighbour!r} is not a neighbour of {hub!r}"), neighbour=neighbour,
                                   hub=self.hub)
        records = verify_trace(trace, self.hub_certs, digest, trust=self.trust, roots=self.roots)  # every record
        if not records or records[-1].hub != neighbour or f"hub:{self.hub}" not in records[-1].targets:
            raise TraceInvalid(N_("the trace does not show {neighbour!r} forwarding this message here"),
                               neighbour=neighbour)
        return records

    def _entry_time(self, records: list[HopRecord]) -> When | None:
        """When the entry hub accepted the message, as its hop record says: the moment the signer's
        certificate is judged at every later hub, so a document that waited in a queue past its
        signer's expiry is not refused downstream (it was valid when sent).  Read from a verified
        trace only once it is shown to be a path of the topology from the hub of the sender the
        message names (else ``TRACE_INVALID``, which stands for no later copy).  None (judge now)
        at the entry hub."""
        if not records:
            return None

        def at(message: edxml.Message) -> datetime:
            check_path(records, self.topology.neighbours, self.topology.agency(message.sender.organ_id).hub, self.hub)
            try:
                return parse_time(records[0].at)
            except ValueError:
                raise TraceInvalid(N_("the entry hub's record has no valid time")) from None

        return at

    def _admit(self, origin: str, sender: str, to: tuple[str, ...], records: list[HopRecord]) -> tuple[str, ...]:
        """Check who handed us the message; return the recipients this copy serves.  A neighbour's
        trace was verified whole, and found a path from the sender's hub, before the message's
        signature was judged (:meth:`_verified_trace`, :meth:`_entry_time`)."""
        if origin.startswith("link:"):
            # the recipients this copy serves are those the previous hub routed here
            forwarded = routed_to(records[-1], f"hub:{self.hub}")
            if not set(forwarded) <= set(to):
                raise TraceInvalid(N_("the trace routes recipients the document does not name"))
            return forwarded
        if origin != f"agency:{sender}":
            raise SenderNotAllowed(N_("account {account!r} may not send documents from {sender!r}"),
                                   account=origin or '(none)', sender=sender)
        if self.topology.agency(sender).hub != self.hub:
            raise SenderNotAllowed(N_("agency {sender!r} must send through its own hub {hub!r}"), sender=sender,
                                   hub=self.topology.agency(sender).hub)
        return to

    # -- outcomes ----------------------------------------------------------------

    def _forward(self, body: bytes, digest: str, document_id: str, sender: str,
                 recipients: tuple[str, ...], trace: list[str], message_kind: str,
                 naming: Mapping[str, Any]) -> Outcome:
        """The signed record of forwarding (or delivering) a judged message, its copies, and the
        transport receipts it earns; ``naming``: the Outcome's fields that name the message
        (``identity`` or ``status``, and ``legacy``)."""
        hops = next_hops(self.topology, self.hub, recipients)
        delivered_here = all(t.kind == TargetKind.INBOX for t in hops)
        record = HopRecord(
            hub=self.hub, at=utc_now(), digest=digest, document_id=document_id,
            verdict=RecordKind.DELIVERED if delivered_here else RecordKind.FORWARDED,
            targets=tuple(str(t) for t in hops), recipients=recipients,
            prev=token_digest(trace[-1]) if trace else "",
            extra={"routes": ";".join(f"{t}={','.join(r)}" for t, r in hops.items()), "kind": message_kind,
                   **({"replaced": r} if (r := self.topology.replacements(recipients)) else {})},
        )
        token = self._sign(record)
        copies = [
            Copy(target, body, {H_KIND: Kind.EDXML, H_TRACE: [*trace, token], H_RECIPIENTS: list(recips)}, str(target))
            for target, recips in hops.items()
        ]
        entries = [AuditEntry("hop", document_id, token)] if self.receipts else []
        # Transport receipts for documents: accepted at the sender's hub, delivered at each inbox.
        if message_kind == "document" and self.receipts:
            issued: list[tuple[str, tuple[str, ...]]] = []
            if not trace:
                issued.append(("accepted", recipients))
            inboxes = tuple(r for t, rs in hops.items() if t.kind == TargetKind.INBOX for r in rs)
            if inboxes:
                issued.append(("delivered", inboxes))
            for receipt_kind, about in issued:
                receipt = receipts.build(receipts.Receipt(
                    kind=receipt_kind, hub=self.hub, time=record.at, document_id=document_id,
                    document_sha256=digest, sender=sender, recipients=about), self.key)
                entries.append(AuditEntry("receipt", document_id, receipt.decode()))
                copies += self._to_agency(sender, receipt, receipt_kind)
        keep = self.receipts and (not trace or delivered_here)  # evidence: the bytes as sent and delivered
        verdict = Verdict.DELIVERED if delivered_here else Verdict.FORWARDED
        return Outcome(digest, document_id, verdict, tuple(copies), sender=sender, record=token,
                       recipients=recipients, entries=tuple(entries), message=body if keep else None, **naming)

    def _to_agency(self, agency: str, receipt: bytes, label: str) -> list[Copy]:
        """Copies of a hub receipt on their way to ``agency``'s inbox: here, or up/down the tree
        with this hub's signed record of it, what the hubs on the way check (:meth:`_relay_receipt`)."""
        copies = []
        for target in next_hops(self.topology, self.hub, (agency,)):
            headers: dict[str, Any] = {H_KIND: Kind.RECEIPT, H_TO: agency}
            far = target.kind == TargetKind.HUB
            if far:
                headers[H_ISSUED] = self._sign(HopRecord(hub=self.hub, at=utc_now(), digest=message_id(receipt),
                                                         document_id="", verdict=RecordKind.RECEIPT,
                                                         recipients=(agency,)))
            copies.append(Copy(target, receipt, headers, f"{label}>{target}", bundled=far))
        return copies

    def bundle(self, copies: Sequence[Copy]) -> list[tuple[Copy, list[int]]]:
        """Receipts this hub issued for agencies of other hubs (:meth:`_to_agency` copies to a
        neighbour), as bundles: one message per neighbour and home hub of the agencies, carrying
        this hub's signed record of its bytes (``lt-issued``, verdict ``receipts``).  Each bundle
        comes with the indexes of the copies it carries (:meth:`_relay_bundle` takes it apart).
        A receipt alone in its group stays as it is: a bundle of one would cost more than it saves."""
        groups: dict[tuple[Target, str], list[int]] = {}
        for i, c in enumerate(copies):
            groups.setdefault((c.target, self.topology.agency(str(c.headers[H_TO])).hub), []).append(i)
        out, most = [], receipts.MAX_BUNDLED if self.bundles else 1
        for (target, home), members in groups.items():
            for start in range(0, len(members), most):
                chunk = members[start:start + most]
                if len(chunk) == 1:
                    out.append((copies[chunk[0]], chunk))
                    continue
                items = [receipts.Bundled(str(copies[i].headers[H_TO]), str(copies[i].headers[H_ISSUED]),
                                          copies[i].body) for i in chunk]
                body = receipts.pack(home, items)
                token = sign_record(HopRecord(hub=self.hub, at=utc_now(), digest=message_id(body), document_id="",
                                              verdict=RecordKind.RECEIPTS,
                                              recipients=tuple(sorted({i.to for i in items}))), self.key)
                out.append((Copy(target, body, {H_KIND: Kind.BUNDLE, H_ISSUED: token}, str(target)), chunk))
        return out

    def _reject(self, msg: Inbound, digest: str, document_id: str, sender: str,
                recipients: tuple[str, ...], exc: RejectedInput | LienthongError, occasion: str = "") -> Outcome:
        # an operator's replay that fails again is a new event: parked and reported again
        again = (f"#{msg.headers[H_REPLAY]}" if msg.headers.get(H_REPLAY) else "") + occasion
        parked = Copy(PARKING, msg.body, {**without_broker_headers(msg.headers), H_CODE: exc.code,
                                          H_REASON: exc.message, H_HUB: self.hub, H_ORIGIN: msg.origin},
                      "parking" + again)
        copies = [parked]
        record = HopRecord(hub=self.hub, at=utc_now(), digest=digest, document_id=document_id,
                           verdict=RecordKind.REJECTED, code=exc.code, recipients=recipients,
                           extra={"reason": exc.message})
        token = self._sign(record)
        entries = [AuditEntry("hop", document_id, token)]
        # Tell the sender, if we know who that is and it is not itself a receipt going astray.
        if sender in self.topology.agencies and kind_of(msg.headers) != Kind.RECEIPT:
            receipt = receipts.build(receipts.Receipt(
                kind="rejected", hub=self.hub, time=record.at, document_id=document_id,
                document_sha256=digest, sender=sender, recipients=recipients,
                code=exc.code, reason=exc.message), self.key)
            entries.append(AuditEntry("receipt", document_id, receipt.decode()))
            copies += self._to_agency(sender, receipt, "rejection" + again)
        return Outcome(digest, document_id, Verdict.REJECTED, tuple(copies), code=exc.code, reason=exc.message,
                       sender=sender, record=token, recipients=recipients, entries=tuple(entries),
                       message=msg.body, standing=getattr(exc, "about_bytes", False))

    def refuse(self, msg: Inbound, judged: Outcome, exc: RejectedInput | LienthongError, *,
               occasion: str = "") -> Outcome:
        """Turn what the hop decided into a refusal, like any other: parked with a signed hop
        record, the sender told by a signed rejection, nothing forwarded.  For what the hop alone
        cannot know: the state store finds the document id, or the status, held by other bytes
        (``DOCUMENT_ID_REUSED``, ``STATUS_REUSED``), or the worker's retries ran out
        (``RETRY_EXHAUSTED``).
        ``occasion`` keeps the claims of one such event apart from another's (the retries of one
        series, say), so that each is published once."""
        return self._reject(msg, judged.digest, judged.document_id, self._agency(msg.origin) or judged.sender,
                            judged.recipients, exc, occasion)

    def _witness(self, msg: Inbound, digest: str, origin: str) -> Outcome:
        """A neighbour's signed audit-log checkpoint: check it, countersign it, keep both in our
        own (hash-chained, checkpointed) log.  Its log can then not be cut or rewritten behind
        this entry without ``audit verify-log`` finding our witness disagree."""
        neighbour = hub_of(origin)
        if neighbour not in self.neighbours:
            raise SenderNotAllowed(N_("only a neighbouring hub may have its checkpoint witnessed here"))
        try:
            token = msg.body.decode("utf-8")
        except UnicodeDecodeError:
            raise TraceInvalid(N_("a checkpoint is a signed record in UTF-8")) from None
        rec = verify_record(token, hub_certificate(self.hub_certs, neighbour, self.trust), self.roots)
        if rec.hub != neighbour or rec.verdict != RecordKind.CHECKPOINT or not rec.extra.get("seq", "").isdigit():
            raise TraceInvalid(N_("not a checkpoint of hub {neighbour!r}"), neighbour=neighbour)
        counter = sign_record(HopRecord(hub=self.hub, at=utc_now(), digest=rec.digest, document_id="",
                                        verdict=RecordKind.WITNESS, extra={"of": neighbour, "seq": rec.extra["seq"],
                                                                           "checkpoint": token_digest(token)}),
                              self.key)
        body = json.dumps({"checkpoint": token, "witness": counter}, sort_keys=True)
        return Outcome(digest, "", Verdict.WITNESSED, (), sender=neighbour, record=counter,
                       entries=(AuditEntry("witness", "", body),))

    def _relay_receipt(self, msg: Inbound, digest: str, origin: str) -> Outcome:
        """A hub receipt from a neighbour.  At every hub, the issuing hub's signed record
        (``lt-issued``) is checked: about these bytes, for one agency, signed by that hub (its
        certificate judged now).  The hub that delivers it into the agency's inbox also checks the
        receipt's own XML signature (chain to the trust store, signer = the hub it names), as the
        agency will, and that it says what the record says.  A receipt without the record (from an
        older hub) is checked whole at every hub."""
        if not origin.startswith("link:"):
            raise SenderNotAllowed(N_("only hubs may send receipts"))
        issued = msg.headers.get(H_ISSUED)
        if issued is None:
            whole = receipts.verify(msg.body, self.trust).receipt
            agency, issuing_hub, document_id = whole.sender, whole.hub, whole.document_id
            hops = next_hops(self.topology, self.hub, (agency,))
        else:
            token = issued.decode("utf-8", "replace") if isinstance(issued, bytes) else str(issued)
            # the issuing hub's signature over its record of these bytes, at every hub: the last one
            # puts the record into the inbox with the receipt, and the agency relies on it
            rec = verify_record(token, hub_certificate(self.hub_certs, parse_record(token).hub, self.trust), self.roots)
            if rec.verdict != RecordKind.RECEIPT or rec.digest != digest or len(rec.recipients) != 1:
                raise TraceInvalid(N_("the receipt's record is not about this receipt"))
            agency, issuing_hub = rec.recipients[0], rec.hub
            hops = next_hops(self.topology, self.hub, (agency,))
            document_id = ""
            if any(t.kind == TargetKind.INBOX for t in hops):  # the last hub: the receipt's own signature too
                whole = receipts.verify(msg.body, self.trust).receipt
                if (whole.sender, whole.hub) != (agency, issuing_hub):
                    raise TraceInvalid(N_("the receipt's record and the receipt disagree (agency or hub)"))
                document_id = whole.document_id
        headers = {H_KIND: Kind.RECEIPT, H_TO: agency} | ({H_ISSUED: issued} if issued is not None else {})
        copies = tuple(Copy(t, msg.body, dict(headers), str(t)) for t in hops)
        return Outcome(digest, document_id, Verdict.FORWARDED, copies, sender=issuing_hub,
                       exactly_once=any(t.kind == TargetKind.INBOX for t in hops))

    def _relay_bundle(self, msg: Inbound, digest: str, origin: str) -> Outcome:
        """A bundle of receipts from a neighbour (:meth:`bundle`).  Every hub checks the bundling
        hub's signature over its record of these bytes, and that the agencies it names are all of
        one hub; the hubs on the way forward it whole, without claims or opening it.  That hub
        checks each receipt as its agency will (the XML signature, by the bundling hub, for that
        agency; the record the agency gets with it, signed by the bundling hub, about these bytes)
        and puts each into its inbox, all claimed under the bundle's digest: a redelivered bundle
        is delivered once."""
        if not origin.startswith("link:"):
            raise SenderNotAllowed(N_("only hubs may send receipts"))
        issued = msg.headers.get(H_ISSUED)
        token = issued.decode("utf-8", "replace") if isinstance(issued, bytes) else str(issued or "")
        issuer = hub_certificate(self.hub_certs, parse_record(token).hub, self.trust)
        rec = verify_record(token, issuer, self.roots)
        if rec.verdict != RecordKind.RECEIPTS or rec.digest != digest:
            raise TraceInvalid(N_("the bundle's record is not a known hub's record of this bundle"))
        homes = {self.topology.agency(a).hub for a in rec.recipients}
        if len(homes) != 1:
            raise TraceInvalid(N_("the bundle's receipts are not all for the agencies of one hub"))
        home = homes.pop()
        if home != self.hub:  # on the way
            onward = Copy(next_hop(self.topology, self.hub, home), msg.body, {H_KIND: Kind.BUNDLE, H_ISSUED: token},
                          f"hub:{home}")
            return Outcome(digest, "", Verdict.FORWARDED, (onward,), sender=rec.hub, exactly_once=False)
        named, items = receipts.unpack(msg.body)
        if named != home or tuple(sorted({i.to for i in items})) != rec.recipients:
            raise TraceInvalid(N_("the bundle's receipts are not those its record names"))
        copies = []
        for i in items:
            whole = receipts.verify(i.receipt, self.trust).receipt
            about, receipt_digest = verify_record(i.issued, issuer, self.roots), message_id(i.receipt)
            if ((whole.sender, whole.hub) != (i.to, rec.hub)
                    or (about.hub, about.verdict, about.digest, about.recipients) != (rec.hub, RecordKind.RECEIPT,
                                                                                     receipt_digest, (i.to,))):
                raise TraceInvalid(N_("a bundled receipt and its record disagree (agency, hub or bytes)"))
            copies.append(Copy(Target(TargetKind.INBOX, i.to), i.receipt,
                               {H_KIND: Kind.RECEIPT, H_TO: i.to, H_ISSUED: i.issued},
                               f"inbox:{i.to}#{receipt_digest[:16]}"))
        return Outcome(digest, "", Verdict.FORWARDED, tuple(copies), sender=rec.hub)


def status_identity(message: edxml.Message) -> tuple[str, str, str]:
    """(sender, the document answered, status code) of a status: one status has one set of bytes,
    so a second status with this identity and other bytes is refused (``STATUS_REUSED``).  The
    document answered is ResponseFor's agency and DocumentId (``<OrganId>/<DocumentId>``); its
    Code (the document's number) does not make another status."""
    answered = message.response_for
    about = f"{answered.organ_id}/{answered.document_id}" if answered is not None else message.document_id
    return message.sender.organ_id, about, message.status_code or ""

