"""Hop records signed per batch (broker/core/sealing.py, docs/wire.md "Hop records"): the Merkle
tree, the v2 token, and a batch of documents carried along the longest route by hubs that each
judge their deliveries inside ``Hop.sealing()`` as the workers do.  Offline: the same tokens cross
a real broker in every relay test, whose workers judge in batches."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from broker.core import sealing, wire
from broker.core.delivery import DeliveryCheck
from broker.core.errors import LienthongError
from broker.core.hop import Hop
from broker.core.hoprecords import PENDING, HopRecord, RecordBatch, parse_record, sign_record, utc_now, verify_record
from broker.core.outcome import Inbound, Outcome
from broker.core.routing import Target, TargetKind
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.relay.assemble import hub_certificates
from tests import hops


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _record(n: int, hub: str = "national") -> HopRecord:
    return HopRecord(hub=hub, at=utc_now(), digest=hashlib.sha256(str(n).encode()).hexdigest(),
                     document_id=f"doc-{n}", verdict="forwarded", recipients=("001.00.31.H14",))


def _tail(token: str) -> str:
    """What follows a token's JSON: ``.<signature>`` (version 1) or ``.<signature>.<path>`` (2)."""
    return token[token.rfind("}") + 1:]


def _code(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(LienthongError) as info:
        call()
    return info.value.code


# --- the tree -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 10))
def test_every_path_leads_to_the_root(n: int) -> None:
    """For batches of 1 to 9 (odd levels included), each payload's path leads to the one root, and
    a root is the RFC 6962 hash: leaf 0x00, node 0x01."""
    payloads = [f'{{"n": {i}}}'.encode() for i in range(n)]
    root, paths = sealing.tree(payloads)
    assert [sealing.root_of(p, path) for p, path in zip(payloads, paths, strict=True)] == [root] * n
    assert all(len(path) % sealing.STEP == 0 for path in paths)
    if n == 1:
        assert root == hashlib.sha256(b"\x00" + payloads[0]).digest() and paths == [b""]
    if n == 2:
        leaves = [hashlib.sha256(b"\x00" + p).digest() for p in payloads]
        assert root == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()


def test_a_path_leads_elsewhere_for_another_payload_or_a_changed_step() -> None:
    payloads = [f'{{"n": {i}}}'.encode() for i in range(5)]
    root, paths = sealing.tree(payloads)
    assert sealing.root_of(payloads[1], paths[0]) != root  # another record's path
    flipped = bytes([paths[0][0] ^ 1]) + paths[0][1:]
    assert sealing.root_of(payloads[0], flipped) != root  # the sibling on the wrong side


@pytest.mark.parametrize("path", [b"\x00" * 32, b"\x02" + b"\x00" * 32, b"\x00" * 33 * (sealing.MAX_DEPTH + 1)],
                         ids=["short step", "side neither 0 nor 1", "too deep"])
def test_a_malformed_path_is_refused(path: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        sealing.root_of(b"{}", path)


def test_an_empty_batch_has_no_tree() -> None:
    with pytest.raises(ValueError):
        sealing.tree([])


# --- tokens ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hubs(dev_pki: Path, topology: Topology) -> dict[str, Hop]:
    return hops.hops(dev_pki, topology)


@pytest.fixture(scope="module")
def certs(dev_pki: Path, topology: Topology) -> dict[str, object]:
    return hub_certificates(dev_pki, topology)


def _sealed(hub: Hop, records: list[HopRecord]) -> list[str]:
    batch = RecordBatch(hub.key)
    placeholders = [batch.add(r) for r in records]
    assert all(p.startswith(PENDING) for p in placeholders)
    batch.seal()
    return [batch.tokens[p] for p in placeholders]


def test_a_batch_is_one_signature_and_each_record_verifies(hubs: dict[str, Hop], certs: dict) -> None:
    """Five records sealed together: v2 tokens (JSON, signature, path), one signature shared, each
    verifying with the hub's certificate and reading back as the record it was."""
    records = [_record(i) for i in range(5)]
    tokens = _sealed(hubs["national"], records)
    parts = [_tail(t).split(".") for t in tokens]
    assert all(len(p) == 3 for p in parts) and len({p[1] for p in parts}) == 1
    assert [verify_record(t, certs["national"]) for t in tokens] == records
    assert [parse_record(t) for t in tokens] == records


def test_a_verified_root_is_remembered_by_its_verifier_only(hubs: dict[str, Hop], certs: dict) -> None:
    """Each verifier keeps its own roots: the one that checked a batch's signature remembers it
    (for that certificate), another verifier has not seen it."""
    tokens = _sealed(hubs["H41"], [_record(i, hub="H41") for i in range(3)])
    mine, theirs = sealing.VerifiedRoots(), sealing.VerifiedRoots()
    verify_record(tokens[0], certs["H41"], mine)
    payload, sig, path = tokens[1][:tokens[1].rfind("}") + 1], *_tail(tokens[1])[1:].split(".")
    key = (certs["H41"], sealing.root_of(payload.encode(), _unb64u(path)), _unb64u(sig))
    assert key in mine and key not in theirs
    assert (certs["national"], *key[1:]) not in mine
    assert verify_record(tokens[1], certs["H41"], mine) == parse_record(tokens[1])


def test_a_batch_of_one_is_a_record_signed_alone(hubs: dict[str, Hop], certs: dict) -> None:
    """Version 1 on the wire: ``<JSON>.<signature>``, as sign_record writes it."""
    record = _record(7)
    [token] = _sealed(hubs["national"], [record])
    assert _tail(token).count(".") == 1
    assert verify_record(token, certs["national"]) == record
    single = sign_record(parse_record(token), hubs["national"].key)
    assert verify_record(single, certs["national"]) == parse_record(token)


def test_each_forgery_of_a_batch_token_is_refused(hubs: dict[str, Hop], certs: dict) -> None:
    """A changed record, another record's path, a garbled path or signature, another hub's
    certificate, the batch signature passed off as a single record's, a single record's signature
    passed off as a batch's: each TRACE_INVALID, also after the genuine root has been verified."""
    tokens = _sealed(hubs["national"], [_record(i) for i in range(4)])
    roots = sealing.VerifiedRoots()
    for t in tokens:
        verify_record(t, certs["national"], roots)  # the root is now remembered as verified
    payload, sig, path = tokens[0][:tokens[0].rfind("}") + 1], *_tail(tokens[0])[1:].split(".")
    other_path = tokens[1].rsplit(".", 1)[1]
    changed = payload.replace('"doc-0"', '"doc-9"')
    raw_path = _unb64u(path)
    forgeries = {
        "changed record": f"{changed}.{sig}.{path}",
        "another record's path": f"{payload}.{sig}.{other_path}",
        "garbled path": f"{payload}.{sig}.{_b64u(bytes([raw_path[0] ^ 1]) + raw_path[1:])}",
        "truncated path": f"{payload}.{sig}.{_b64u(raw_path[:-1])}",
        "garbled signature": f"{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}.{path}",
        "batch signature alone": f"{payload}.{sig}",
        "four parts": f"{payload}.{sig}.{path}.{path}",
    }
    for name, forged in forgeries.items():
        for remembered in (roots, None):
            assert _code(lambda f=forged, r=remembered: verify_record(f, certs["national"], r)) == "TRACE_INVALID", name
    assert _code(lambda: verify_record(tokens[0], certs["H41"], roots)) == "TRACE_INVALID"
    single = sign_record(parse_record(tokens[0]), hubs["national"].key)
    single_sig = single.rsplit(".", 1)[1]
    assert _code(lambda: verify_record(f"{payload}.{single_sig}.{path}", certs["national"])) == "TRACE_INVALID"


# --- hubs judging in batches ----------------------------------------------------------------------


def _judged_together(hub: Hop, inbounds: list[Inbound]) -> list[Outcome]:
    """What a worker does with a batch of deliveries (broker/relay/pipeline.py)."""
    with hub.sealing() as records:
        outcomes = [hub.process(i) for i in inbounds]
    return [records.resolve(o) for o in outcomes]


def _no_placeholder(outcome: Outcome) -> bool:
    texts = [outcome.record, *(e.body for e in outcome.entries)]
    for c in outcome.copies:
        texts += [*c.headers.get(wire.H_TRACE, []), c.headers.get(wire.H_ISSUED) or ""]
    return not any(PENDING in t for t in texts)


def test_documents_judged_in_batches_along_the_longest_route(dev_pki: Path, topology: Topology,
                                                             hubs: dict[str, Hop], certs: dict) -> None:
    """Three documents, each hub of H41 -> national -> H14 -> H14-D31 judging the three in one
    batch: every hop record is a v2 token, nothing unsigned leaves a hub, each hub after verifies
    the trace, and the recipient's SDK check accepts what reaches the inbox."""
    bodies = [hops.document(dev_pki, topology, hops.SENDER, [hops.RECIPIENT], subject=f"Lô {i}") for i in range(3)]
    inbounds = [hops.from_agency(b, hops.SENDER) for b in bodies]
    for i, hub in enumerate(hops.ROUTE):
        outcomes = _judged_together(hubs[hub], inbounds)
        assert all(_no_placeholder(o) for o in outcomes)
        assert [o.verdict for o in outcomes] == ["forwarded" if i + 1 < len(hops.ROUTE) else "delivered"] * 3
        assert len({_tail(o.record).split(".")[1] for o in outcomes}) == 1  # one signature
        assert [e.body for o in outcomes for e in o.entries if e.kind == "hop"] == [o.record for o in outcomes]
        if i + 1 < len(hops.ROUTE):
            nxt = Target(TargetKind.HUB, hops.ROUTE[i + 1])
            onward = [next(c for c in o.copies if c.target == nxt and wire.kind_of(c.headers) == wire.Kind.EDXML)
                      for o in outcomes]
            inbounds = [hops.from_hub(c, hub) for c in onward]
    inbox = [next(c for c in o.copies if c.target == Target(TargetKind.INBOX, hops.RECIPIENT)) for o in outcomes]
    check = DeliveryCheck(TrustStore.load(dev_pki), topology, certs)
    for body, copy in zip(bodies, inbox, strict=True):
        trace = copy.headers[wire.H_TRACE]
        assert len(trace) == 4 and all(_tail(t).count(".") == 2 for t in trace)
        check(hops.RECIPIENT, "edxml", body, trace)
        assert [parse_record(t).hub for t in trace] == list(hops.ROUTE)
    forged = [*trace[:2], trace[2].replace('"H14"', '"H14-D31"', 1), trace[3]]
    assert _code(lambda: check(hops.RECIPIENT, "edxml", bodies[-1], forged)) == "TRACE_INVALID"


def test_a_batch_of_one_delivery_writes_version_1(dev_pki: Path, topology: Topology, hubs: dict[str, Hop]) -> None:
    body = hops.document(dev_pki, topology, hops.SENDER, [hops.RECIPIENT])
    [outcome] = _judged_together(hubs["H41"], [hops.from_agency(body, hops.SENDER)])
    record = outcome.record
    assert _tail(record).count(".") == 1 and not record.startswith(PENDING)


def test_receipts_issued_in_a_batch_verify_at_the_sender(dev_pki: Path, topology: Topology,
                                                         hubs: dict[str, Hop], certs: dict) -> None:
    """The far hub's ``lt-issued`` records of the delivered receipts, sealed with the batch's hop
    records, verify in the SDK's check at the sender, and not for another agency."""
    bodies = [hops.document(dev_pki, topology, hops.SENDER, [hops.RECIPIENT], subject=f"Biên nhận {i}")
              for i in range(2)]
    carried = [hops.carry(hubs, b, hops.ROUTE[:3]) for b in bodies]
    last = [hops.from_hub(next(c for c in out[-1].copies if c.target == Target(TargetKind.HUB, "H14-D31")
                               and wire.kind_of(c.headers) == wire.Kind.EDXML), "H14") for out in carried]
    outcomes = _judged_together(hubs["H14-D31"], last)
    issued = [c for o in outcomes for c in o.copies if wire.H_ISSUED in c.headers]
    assert len(issued) == 2 and all(_tail(c.headers[wire.H_ISSUED]).count(".") == 2 for c in issued)
    check = DeliveryCheck(TrustStore.load(dev_pki), topology, certs)
    for c in issued:
        check(hops.SENDER, "receipt", c.body, [], c.headers[wire.H_ISSUED])
    token = issued[0].headers[wire.H_ISSUED]
    moved = replace(parse_record(token), recipients=("000.00.52.H41",)).payload().decode()
    forged = moved + _tail(token)
    assert _code(lambda: check(hops.SENDER, "receipt", issued[0].body, [], forged)) == "TRACE_INVALID"
