"""A hub receipt on its way back, with no broker: the hubs in between check the issuing hub's signed
record of it (lt-issued) and forward it without claims; the hub that puts it into the sender's
inbox also checks the receipt's own XML signature, and claims it there (exactly once).  Receipts
issued together travel as one bundle, checked the same way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.core import receipts, wire
from broker.core.edxml import Organ, build_document
from broker.core.hop import Hop
from broker.core.hoprecords import HopRecord, parse_record, sign_record, utc_now
from broker.core.outcome import Copy, Inbound, Outcome
from broker.core.routing import Target
from broker.core.signer import SigningKey, sign
from broker.core.topology import Topology
from broker.relay import devpki
from tests.hops import hops as hops_of

ROOT = Path(__file__).resolve().parents[1]
SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"
ROUTE = ("H41", "national", "H14", "H14-D31")


@pytest.fixture(scope="module")
def hops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Hop], Path]]:
    topology = Topology.load(ROOT / "config" / "topology.yaml")
    pki = devpki.init(tmp_path_factory.mktemp("receipts") / "pki", topology)
    yield hops_of(pki, topology), pki


def _delivered_receipt(hops: dict[str, Hop], pki: Path) -> Copy:
    """Carry a document along the route; return the delivered receipt the last hub sends back."""
    key = SigningKey.load(pki / "agencies" / SENDER / "key.pem", pki / "agencies" / SENDER / "cert.pem")
    doc = sign(build_document(Organ(SENDER, "A"), [Organ(RECIPIENT, "B")], subject="biên nhận",
                              attachments=[("a.pdf", "application/pdf", os.urandom(500))]), key)
    inbound = Inbound(doc, {}, wire.agency_exchange(SENDER))
    for i, hub in enumerate(ROUTE):
        out = hops[hub].process(inbound)
        assert out.verdict in ("forwarded", "delivered"), out.reason
        if i + 1 < len(ROUTE):
            onward = next(c for c in out.copies if c.headers[wire.H_KIND] == "edxml")
            inbound = Inbound(onward.body, onward.headers, wire.link_exchange(hub))
    return next(c for c in out.copies if c.headers[wire.H_KIND] == "receipt" and c.target.kind == "hub")


def _through(hop: Hop, copy: Copy, came_from: str) -> Outcome:
    return hop.process(Inbound(copy.body, copy.headers, wire.link_exchange(came_from)))


def test_the_delivered_receipt_goes_back_claimed_only_where_it_is_delivered(
        hops: tuple[dict[str, Hop], Path]) -> None:
    """H14 and national forward the receipt (no claims: exactly_once False); H41 puts it into the
    sender's inbox through a claim, after checking it whole; it arrives with its signed record."""
    hop, pki = hops
    copy = _delivered_receipt(hop, pki)
    assert copy.target.name == "H14" and wire.H_ISSUED in copy.headers
    via_h14 = _through(hop["H14"], copy, "H14-D31")
    assert (via_h14.verdict, via_h14.exactly_once, [str(c.target) for c in via_h14.copies]) == (
        "forwarded", False, ["hub:national"])
    via_national = _through(hop["national"], via_h14.copies[0], "H14")
    assert (via_national.exactly_once, [str(c.target) for c in via_national.copies]) == (False, ["hub:H41"])
    at_h41 = _through(hop["H41"], via_national.copies[0], "national")
    assert at_h41.exactly_once and [str(c.target) for c in at_h41.copies] == [f"inbox:{SENDER}"]
    assert at_h41.copies[0].body == copy.body and at_h41.document_id
    r = receipts.verify(at_h41.copies[0].body, hop["H41"].trust).receipt
    assert (r.kind, r.hub, r.sender) == ("delivered", "H14-D31", SENDER)


def test_altered_or_forged_receipts_are_refused_on_the_way(hops: tuple[dict[str, Hop], Path]) -> None:
    """Bytes changed after the record was signed, a record signed with another hub's key, a record
    about another agency than the receipt: each is refused TRACE_INVALID (parked) where it shows."""
    hop, pki = hops
    copy = _delivered_receipt(hop, pki)
    altered = replace(copy, body=copy.body.replace(b"delivered", b"accepted"))
    out = _through(hop["H14"], altered, "H14-D31")
    assert (out.verdict, out.code) == ("rejected", "TRACE_INVALID")

    record = HopRecord(hub="H14-D31", at=utc_now(), digest=wire.message_id(copy.body), document_id="",
                       verdict="receipt", recipients=(SENDER,))
    forged = replace(copy, headers={**copy.headers, wire.H_ISSUED: sign_record(record, hop["H14"].key)})
    out = _through(hop["H14"], forged, "H14-D31")
    assert (out.verdict, out.code) == ("rejected", "TRACE_INVALID")

    other = "000.00.52.H41"  # an agency of the same hub: the record would deliver it to the wrong inbox
    rerouted = replace(copy, headers={**copy.headers, wire.H_ISSUED: sign_record(
        replace(record, recipients=(other,)), hop["H14-D31"].key)})
    out = _through(hop["H41"], _through(hop["national"], _through(hop["H14"], rerouted, "H14-D31").copies[0],
                                        "H14").copies[0], "national")
    assert (out.verdict, out.code) == ("rejected", "TRACE_INVALID") and "disagree" in out.reason


def test_a_receipt_without_its_record_is_checked_whole(hops: tuple[dict[str, Hop], Path]) -> None:
    """From a hub that does not send the record yet: the XML signature is checked at every hub, as
    before, and the receipt still arrives; an agency's account can never hand in a receipt."""
    hop, pki = hops
    copy = _delivered_receipt(hop, pki)
    bare = replace(copy, headers={k: v for k, v in copy.headers.items() if k != wire.H_ISSUED})
    out = _through(hop["H14"], bare, "H14-D31")
    assert out.verdict == "forwarded" and not out.exactly_once
    out = _through(hop["H41"], _through(hop["national"], out.copies[0], "H14").copies[0], "national")
    assert out.exactly_once and [str(c.target) for c in out.copies] == [f"inbox:{SENDER}"]
    broken = replace(bare, body=bare.body.replace(b"delivered", b"accepted"))
    out = _through(hop["H14"], broken, "H14-D31")
    assert (out.verdict, out.code) == ("rejected", "SIG_DIGEST")
    by_agency = hop["H41"].process(Inbound(copy.body, copy.headers, wire.agency_exchange(SENDER)))
    assert (by_agency.verdict, by_agency.code) == ("rejected", "SENDER_NOT_ALLOWED")


def _bundle(hop: Hop, home: str, items: list[receipts.Bundled]) -> Copy:
    """A bundle of ``items`` for ``home`` with a record signed by ``hop`` (valid or not inside)."""
    body = receipts.pack(home, items)
    token = sign_record(HopRecord(hub=hop.hub, at=utc_now(), digest=wire.message_id(body), document_id="",
                                  verdict="receipts", recipients=tuple(sorted({i.to for i in items}))), hop.key)
    return Copy(Target("hub", "H14"), body, {wire.H_KIND: wire.Kind.BUNDLE, wire.H_ISSUED: token}, "hub:H14")


def _item(copy: Copy) -> receipts.Bundled:
    return receipts.Bundled(copy.headers[wire.H_TO], copy.headers[wire.H_ISSUED], copy.body)


def test_receipts_issued_in_one_turn_go_back_as_one_bundle(hops: tuple[dict[str, Hop], Path]) -> None:
    """Two delivered receipts for the same sender leave the last hub as one message; the hubs on
    the way forward it whole without claims; the sender's hub takes it apart and puts each receipt,
    its exact bytes with its own signed record, into the inbox, all claimed under the bundle."""
    hop, pki = hops
    first, second = _delivered_receipt(hop, pki), _delivered_receipt(hop, pki)
    [(bundle, members)] = hop["H14-D31"].bundle([first, second])
    assert members == [0, 1] and str(bundle.target) == "hub:H14" and bundle.headers[wire.H_KIND] == "receipts"
    via_h14 = _through(hop["H14"], bundle, "H14-D31")
    assert (via_h14.verdict, via_h14.exactly_once, [str(c.target) for c in via_h14.copies]) == (
        "forwarded", False, ["hub:national"])
    assert via_h14.copies[0].body == bundle.body
    via_national = _through(hop["national"], via_h14.copies[0], "H14")
    assert [str(c.target) for c in via_national.copies] == ["hub:H41"] and not via_national.exactly_once
    at_h41 = _through(hop["H41"], via_national.copies[0], "national")
    assert at_h41.exactly_once and at_h41.digest == wire.message_id(bundle.body)
    assert [(str(c.target), c.body, c.headers[wire.H_ISSUED]) for c in at_h41.copies] == [
        (f"inbox:{SENDER}", first.body, first.headers[wire.H_ISSUED]),
        (f"inbox:{SENDER}", second.body, second.headers[wire.H_ISSUED])]
    assert len({c.claim for c in at_h41.copies}) == 2
    for c in at_h41.copies:
        assert receipts.verify(c.body, hop["H41"].trust).receipt.kind == "delivered"


def test_a_turn_with_more_receipts_than_a_bundle_holds_sends_several(hops: tuple[dict[str, Hop], Path]) -> None:
    """Bundles of at most MAX_BUNDLED; a receipt left alone goes as a single receipt, as one
    issued alone in its turn does."""
    hop, pki = hops
    copy = _delivered_receipt(hop, pki)
    bundles = hop["H14-D31"].bundle([copy] * (receipts.MAX_BUNDLED + 2))
    assert [len(m) for _, m in bundles] == [receipts.MAX_BUNDLED, 2]
    bundles = hop["H14-D31"].bundle([copy] * (receipts.MAX_BUNDLED + 1))
    assert [len(m) for _, m in bundles] == [receipts.MAX_BUNDLED, 1]
    assert [i for _, m in bundles for i in m] == list(range(receipts.MAX_BUNDLED + 1))
    assert bundles[0][0].headers[wire.H_KIND] == "receipts" and bundles[1][0] == copy
    assert hop["H14-D31"].bundle([copy]) == [(copy, [0])]


def test_with_bundles_off_each_receipt_travels_alone_and_arrives(hops: tuple[dict[str, Hop], Path]) -> None:
    """``LIENTHONG_RECEIPT_BUNDLES=off`` (to measure what bundles save): receipts that would share a
    bundle each leave alone with their own record, and each reaches the sender's inbox once."""
    hop, pki = hops
    first, second = _delivered_receipt(hop, pki), _delivered_receipt(hop, pki)
    alone = replace(hop["H14-D31"], bundles=False)
    assert alone.bundle([first, second]) == [(first, [0]), (second, [1])]
    for copy in (first, second):
        out = _through(hop["national"], _through(hop["H14"], copy, "H14-D31").copies[0], "H14")
        at_h41 = _through(hop["H41"], out.copies[0], "national")
        assert at_h41.exactly_once and [(str(c.target), c.body) for c in at_h41.copies] == [
            (f"inbox:{SENDER}", copy.body)]
    assert [len(m) for _, m in hop["H14-D31"].bundle([first, second])] == [2]  # the default: one bundle


def test_altered_or_forged_bundles_are_refused(hops: tuple[dict[str, Hop], Path]) -> None:
    """Bytes changed after the bundle was signed, a record signed by another hub in the bundling
    hub's name, receipts for agencies of two hubs, a receipt broken inside a well-signed bundle or
    addressed to another agency than its own: each is refused (parked) where it shows; an agency's
    account cannot hand in a bundle."""
    hop, pki = hops
    copy = _delivered_receipt(hop, pki)
    [(bundle, _)] = hop["H14-D31"].bundle([copy, _delivered_receipt(hop, pki)])
    altered = replace(bundle, body=bundle.body.replace(b'"hub":"H41"', b'"hub":"H14"'))
    assert (_through(hop["H14"], altered, "H14-D31").code) == "TRACE_INVALID"

    forged = _bundle(hop["H14"], "H41", [_item(copy)])
    token = forged.headers[wire.H_ISSUED].replace('"hub":"H14"', '"hub":"H14-D31"')
    out = _through(hop["H14"], replace(forged, headers={**forged.headers, wire.H_ISSUED: token}), "H14-D31")
    assert (out.verdict, out.code) == ("rejected", "TRACE_INVALID")

    other_hub = receipts.Bundled("000.00.00.H14", copy.headers[wire.H_ISSUED], copy.body)
    out = _through(hop["H14"], _bundle(hop["H14-D31"], "H41", [_item(copy), other_hub]), "H14-D31")
    assert (out.code, "agencies of one hub" in out.reason) == ("TRACE_INVALID", True)

    unnamed = _bundle(hop["H14-D31"], "H41", [_item(copy)])  # the record names another agency of H41
    token = sign_record(replace(parse_record(unnamed.headers[wire.H_ISSUED]), recipients=("000.00.52.H41",)),
                        hop["H14-D31"].key)
    out = _through(hop["H41"], replace(unnamed, headers={**unnamed.headers, wire.H_ISSUED: token}), "national")
    assert (out.code, "record names" in out.reason) == ("TRACE_INVALID", True)

    broken = receipts.Bundled(SENDER, copy.headers[wire.H_ISSUED], copy.body.replace(b"delivered", b"accepted"))
    out = _through(hop["H41"], _bundle(hop["H14-D31"], "H41", [_item(copy), broken]), "national")
    assert (out.verdict, out.code) == ("rejected", "SIG_DIGEST")

    misaddressed = receipts.Bundled("000.00.52.H41", copy.headers[wire.H_ISSUED], copy.body)
    out = _through(hop["H41"], _bundle(hop["H14-D31"], "H41", [misaddressed]), "national")
    assert (out.code, "disagree" in out.reason) == ("TRACE_INVALID", True)

    by_agency = hop["H41"].process(Inbound(bundle.body, bundle.headers, wire.agency_exchange(SENDER)))
    assert (by_agency.verdict, by_agency.code) == ("rejected", "SENDER_NOT_ALLOWED")
