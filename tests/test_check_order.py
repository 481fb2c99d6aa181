"""The order of checks: nothing from an unverified record is used, a status has one set of bytes,
and what the last hub puts into an inbox verifies.  The findings of the trust review, each
reproduced, each of which must now fail:

- the entry time used to judge the signer came from ``records[0]`` before the trace was verified:
  a copy whose first record was unsigned and dated 2019 was refused CERT_EXPIRED as a standing
  refusal, and the genuine copy was then refused too;
- a re-serialised status was delivered twice;
- the last hub put an ``lt-issued`` record with a garbage signature into the inbox.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.core import receipts, wire
from broker.core.delivery import DeliveryCheck
from broker.core.errors import LienthongError
from broker.core.hop import Hop
from broker.core.hoprecords import HopRecord, parse_record, sign_record, token_digest
from broker.core.outcome import Copy, Inbound, Outcome
from broker.core.routing import Target
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.relay.amqp import blocking
from broker.relay.assemble import hub_certificates
from tests import hops
from tests.relay import Relay

SENDER, FAR = hops.SENDER, hops.RECIPIENT  # H41 -> national -> H14 -> H14-D31
LONG_AGO = "2019-03-01T08:00:00.000000Z"


@pytest.fixture(scope="module")
def hubs(dev_pki: Path, topology: Topology) -> dict[str, Hop]:
    return hops.hops(dev_pki, topology)


def _onward(outcome: Outcome, hub: str) -> Copy:
    return next(c for c in outcome.copies if str(c.target) == f"hub:{hub}" and wire.kind_of(c.headers) == "edxml")


def _garbled(token: str) -> str:
    """``token`` with a signature that verifies nothing (well-formed base64url)."""
    payload, _, sig = token.rpartition(".")
    return payload + "." + ("A" if sig[0] != "A" else "B") + sig[1:]


def _code(call: Any) -> str:
    with pytest.raises(LienthongError) as info:
        call()
    return info.value.code


# --- the entry time comes from a verified trace only ----------------------------------------------


def test_an_unsigned_first_record_dated_2019_makes_no_standing_refusal(dev_pki: Path, topology: Topology,
                                                                       hubs: dict[str, Hop]) -> None:
    """A copy reaches H14 whose first record (H41's) says 2019, its signature no longer matching.
    It used to set the time the signer was judged at (CERT_EXPIRED, standing: the genuine copy was
    then refused too); it is refused TRACE_INVALID, for this copy only, and the genuine copy passes."""
    body = hops.document(dev_pki, topology, SENDER, [FAR])
    genuine = _onward(hops.carry(hubs, body, ("H41", "national"))[-1], "H14")
    first, national = genuine.headers[wire.H_TRACE]
    dated = first.replace(parse_record(first).at, LONG_AGO)
    forged = replace(genuine, headers={**genuine.headers, wire.H_TRACE: [dated, national]})
    refused = hubs["H14"].process(hops.from_hub(forged, "national"))
    assert (refused.verdict, refused.code, refused.standing) == ("rejected", "TRACE_INVALID", False)
    assert "signature" in refused.reason
    assert hubs["H14"].process(hops.from_hub(genuine, "national")).verdict == "forwarded"


def test_a_genuine_record_out_of_place_lends_the_trace_no_time(dev_pki: Path, topology: Topology,
                                                               hubs: dict[str, Hop]) -> None:
    """The national hub signs a record dated 2019 and puts it first, then its genuine one: every
    signature verifies, but the trace does not start at the sender's hub, so its time is never
    read (it used to make a standing CERT_EXPIRED): TRACE_INVALID, not standing."""
    body = hops.document(dev_pki, topology, SENDER, [FAR])
    digest = hashlib.sha256(body).hexdigest()
    key = hubs["national"].key

    def record(at: str, prev: str) -> str:
        return sign_record(HopRecord(hub="national", at=at, digest=digest, document_id="d", verdict="forwarded",
                                     targets=("hub:H14",), recipients=(FAR,), prev=prev,
                                     extra={"routes": f"hub:H14={FAR}", "kind": "document"}), key)

    early = record(LONG_AGO, "")
    trace = [early, record("2026-01-01T00:00:00.000000Z", token_digest(early))]
    out = hubs["H14"].process(Inbound(body, {wire.H_TRACE: trace}, wire.link_exchange("national")))
    assert (out.verdict, out.code, out.standing) == ("rejected", "TRACE_INVALID", False)
    assert "sender's own hub" in out.reason


def test_a_recipient_reads_the_entry_time_only_from_a_verified_trace(dev_pki: Path, topology: Topology,
                                                                    hubs: dict[str, Hop]) -> None:
    """The same at the recipient: its copy's first record re-dated 2019 is refused TRACE_INVALID
    (a refusal of the trace, not of the bytes), never CERT_EXPIRED; the genuine copy passes."""
    body = hops.document(dev_pki, topology, SENDER, [FAR])
    [inbox] = [c for c in hops.carry(hubs, body)[-1].copies if str(c.target) == f"inbox:{FAR}"]
    trace = list(inbox.headers[wire.H_TRACE])
    check = DeliveryCheck(TrustStore.load(dev_pki), topology, hub_certificates(dev_pki, topology))
    check(FAR, "edxml", body, trace)
    forged = [trace[0].replace(parse_record(trace[0]).at, LONG_AGO), *trace[1:]]
    with pytest.raises(LienthongError) as info:
        check(FAR, "edxml", body, forged)
    assert info.value.code == "TRACE_INVALID" and not getattr(info.value, "about_bytes", True)


# --- what the last hub puts into an inbox verifies ------------------------------------------------


def _receipt_at_h41(dev_pki: Path, topology: Topology, hubs: dict[str, Hop]) -> Copy:
    """The delivered receipt for SENDER as the national hub hands it to H41, the last hub."""
    body = hops.document(dev_pki, topology, SENDER, [FAR])
    [back] = [c for c in hops.carry(hubs, body)[-1].copies if wire.kind_of(c.headers) == "receipt"
              and c.target.kind == "hub"]
    for hub, came_from in (("H14", "H14-D31"), ("national", "H14")):
        [back] = hubs[hub].process(hops.from_hub(back, came_from)).copies
    return back


def test_the_last_hub_puts_only_verified_records_into_an_inbox(dev_pki: Path, topology: Topology,
                                                                hubs: dict[str, Hop]) -> None:
    """A receipt reaches H41, the last hub, with an lt-issued record whose signature is garbage (the
    hubs on the way verify it; the last one used to copy it into the inbox unchecked): refused
    TRACE_INVALID.  The same inside a bundle the issuing hub signed.  The genuine receipt goes
    into the inbox with its record, which verifies."""
    genuine = _receipt_at_h41(dev_pki, topology, hubs)
    forged = replace(genuine, headers={**genuine.headers, wire.H_ISSUED: _garbled(genuine.headers[wire.H_ISSUED])})
    out = hubs["H41"].process(hops.from_hub(forged, "national"))
    assert (out.verdict, out.code) == ("rejected", "TRACE_INVALID") and "signature" in out.reason

    item = receipts.Bundled(SENDER, _garbled(genuine.headers[wire.H_ISSUED]), genuine.body)
    body = receipts.pack("H41", [item])
    bundling = hubs["H14-D31"]
    token = sign_record(HopRecord(hub="H14-D31", at=parse_record(genuine.headers[wire.H_ISSUED]).at,
                                  digest=wire.message_id(body), document_id="", verdict="receipts",
                                  recipients=(SENDER,)), bundling.key)
    bundle = Copy(Target("hub", "H41"), body, {wire.H_KIND: wire.Kind.BUNDLE, wire.H_ISSUED: token}, "hub:H41")
    out = hubs["H41"].process(hops.from_hub(bundle, "national"))
    assert (out.verdict, out.code) == ("rejected", "TRACE_INVALID")

    delivered = hubs["H41"].process(hops.from_hub(genuine, "national"))
    [inbox] = delivered.copies
    assert str(inbox.target) == f"inbox:{SENDER}"
    DeliveryCheck(TrustStore.load(dev_pki), topology, hub_certificates(dev_pki, topology))(
        SENDER, "receipt", inbox.body, [], inbox.headers[wire.H_ISSUED])


def test_a_recipient_refuses_a_receipt_whose_record_does_not_verify(dev_pki: Path, topology: Topology,
                                                                    hubs: dict[str, Hop]) -> None:
    """The SDK's check relies on lt-issued: a garbled signature, or a genuine record of the issuing
    hub about another agency, is refused TRACE_INVALID; a receipt without one is judged by its
    own signature alone (receipts issued at the agency's own hub carry none)."""
    genuine = _receipt_at_h41(dev_pki, topology, hubs)
    issued = genuine.headers[wire.H_ISSUED]
    check = DeliveryCheck(TrustStore.load(dev_pki), topology, hub_certificates(dev_pki, topology))
    check(SENDER, "receipt", genuine.body, [], issued)
    check(SENDER, "receipt", genuine.body, [], None)
    assert _code(lambda: check(SENDER, "receipt", genuine.body, [], _garbled(issued))) == "TRACE_INVALID"
    other = sign_record(replace(parse_record(issued), recipients=("000.00.52.H41",)), hubs["H14-D31"].key)
    assert _code(lambda: check(SENDER, "receipt", genuine.body, [], other)) == "TRACE_INVALID"


# --- the same on a real relay ---------------------------------------------------------------------


@pytest.mark.broker
def test_a_reserialised_status_is_refused_never_delivered_twice(relay: Relay) -> None:
    """The recipient answers a document with status 03, then sends status 03 about it again with
    other bytes (another description): the sender gets the first status only; the second is
    refused STATUS_REUSED at the recipient's hub, parked, its sender told by a signed rejection."""
    doc = relay.document(SENDER, [FAR], subject="trạng thái")
    relay.client(SENDER).send(doc)
    assert [i.body for i in relay.take(FAR, 1, timeout=60)] == [doc]
    answering = relay.client(FAR)
    first = answering.status_for(doc, "03", key=relay.key(FAR), description="Đã tiếp nhận")
    again = answering.status_for(doc, "03", key=relay.key(FAR), description="Đã tiếp nhận văn bản")
    answering.send(first)
    assert [i.body for i in relay.take(SENDER, 1, timeout=60)] == [first]
    answering.send(again)
    r = relay.rejection(FAR)
    assert (r.code, r.hub, r.document_sha256) == ("STATUS_REUSED", "H14-D31", wire.message_id(again))
    parked = relay.drain("H14-D31", "parking", timeout=10)
    assert [(p.body, p.headers["lt-code"]) for p in parked] == [(again, "STATUS_REUSED")]
    relay.wait_idle()
    assert relay.documents_waiting(SENDER) == []


@pytest.mark.broker
def test_a_recipient_takes_the_genuine_copy_after_a_forged_one(relay: Relay) -> None:
    """The recipient's hub puts into the inbox the genuine document under a trace whose first record
    was re-dated (a forged copy), then the genuine copy; and the sender's hub a genuine receipt
    under a garbled lt-issued, then as it came.  The SDK refuses each forged copy TRACE_INVALID
    and hands over each genuine one: a refusal of what travels beside the bytes does not make the
    bytes a twin of something already handled."""
    doc = relay.document(SENDER, [FAR], subject="bản thật")
    relay.client(SENDER).send(doc)
    relay.wait_idle()
    genuine = _find(relay, "H14-D31", FAR, lambda r: r.body == doc)
    trace = [t.decode() if isinstance(t, bytes) else str(t) for t in genuine.headers[wire.H_TRACE]]
    forged = {**genuine.headers, wire.H_TRACE: [trace[0].replace(parse_record(trace[0]).at, LONG_AGO), *trace[1:]]}
    _put(relay, "H14-D31", FAR, doc, forged)
    _put(relay, "H14-D31", FAR, doc, genuine.headers)
    delivered = _find(relay, "H41", SENDER, lambda r: wire.kind_of(r.headers) == "receipt" and (
        receipts.read_bytes(r.body).kind, receipts.read_bytes(r.body).document_sha256) == (
        "delivered", wire.message_id(doc)))
    issued = delivered.headers[wire.H_ISSUED]
    issued = issued.decode() if isinstance(issued, bytes) else str(issued)
    _put(relay, "H41", SENDER, delivered.body, {**delivered.headers, wire.H_ISSUED: _garbled(issued)})
    _put(relay, "H41", SENDER, delivered.body, delivered.headers)
    for agency, body in ((FAR, doc), (SENDER, delivered.body)):
        client = relay.client(agency)
        handed: list[bytes] = []
        client.fetch(lambda item, b=body, h=handed: h.append(item.body) if item.body == b else None, wait=2.0)
        assert handed == [body]
        assert [(i.body, e.code) for i, e in client.refused] == [(body, "TRACE_INVALID")]


def _find(relay: Relay, hub: str, agency: str, match: Any, timeout: float = 30.0) -> Any:
    """Take messages from ``agency``'s inbox (at its hub ``hub``) until one ``match``es; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in relay.drain(hub, wire.inbox_queue(agency), timeout=2):
            if match(r):
                return r
    raise AssertionError(f"nothing expected reached the inbox of {agency}")


def _put(relay: Relay, hub: str, agency: str, body: bytes, headers: Any) -> None:
    """Publish into ``agency``'s inbox as its hub ``hub`` does (a hub's account may)."""
    blocking.publish(relay.hub_url(hub), wire.EX_INBOX, agency, body, message_id=wire.message_id(body),
                     user_id=relay.names.hub_user(hub), headers=dict(headers))
