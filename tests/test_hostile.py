"""Hostile input over every way in (AMQP, REST gateway, folder drop) on a real relay.

Each case is refused with its specific code; where the sender can be told, it gets a rejection
receipt signed by the hub (verified here); the refused bytes are parked at the entry hub with the
same code; no worker crashes, and a good document still goes through once afterwards.

Senders: 000.00.00.G22 over raw AMQP (hub national; the signature corpus of test_signatures.py is
built for it), 000.00.01.H14 over the gateway and 000.00.00.H14 through a folder (hub H14).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from adapters.folder import FolderAdapter
from adapters.gateway import create_app, issue_token
from adapters.sdk import InboxItem
from broker import devpki, errors, layout, receipts, transport
from broker.algorithms import DS
from broker.edxml import E, Organ, ResponseFor, build_document, build_status
from broker.parsing import parse
from broker.signer import SigningKey, sign
from broker.trust import TrustStore
from tests import test_signatures as corpus
from tests.relay import Relay, serve

pytestmark = pytest.mark.broker

AMQP_SENDER, REST_SENDER, FOLDER_SENDER = "000.00.00.G22", "000.00.01.H14", "000.00.00.H14"
RECIPIENT = "000.00.00.H41"
REVOKED = "000.00.00.G17"
MAX_BYTES = 300_000


@pytest.fixture(scope="module")
def relay(rabbitmq_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """G17's certificate is revoked before the hubs start (they load the CRL at start)."""
    r = Relay(tmp_path_factory.mktemp("hostile"), *rabbitmq_urls, workers=0,
              settings={"max_bytes": MAX_BYTES, "max_depth": 64})
    devpki.revoke(r.settings.pki, [r.settings.pki / "agencies" / REVOKED / "cert.pem"])
    for hub in r.topology.hubs:
        r.start_worker(hub)
    yield r
    r.close()


# --- what attackers send ------------------------------------------------------------------


def _sig(root: etree._Element) -> etree._Element:
    return next(root.iter(DS + "Signature"))


def _edit(data: bytes, change: Callable[[etree._Element], None]) -> bytes:
    tree = parse(data)
    change(tree.getroot())
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def _wrap_object(data: bytes) -> bytes:
    def wrap(r: etree._Element) -> None:
        mh = r.find(f"{E}edXMLEnvelope/{E}edXMLHeader/{E}MessageHeader")
        etree.SubElement(_sig(r), DS + "Object").append(copy.deepcopy(mh))
        mh.find(E + "Subject").text = "forged subject"
    return _edit(data, wrap)


def _moved_signature(data: bytes) -> bytes:
    def move(r: etree._Element) -> None:
        slot = etree.Element(E + "Signature")
        _sig(r).addprevious(slot)
        slot.append(_sig(r))
    return _edit(data, move)


def _parse_cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    """Malformed XML, entity and DTD attacks, size and depth: refused before any signature work."""
    ns = b"http://www.mic.gov.vn/TBT/QCVN_102_2016"
    return {
        "truncated": (good[: len(good) // 2], "XML_MALFORMED"),
        "binary-garbage": (bytes(range(256)) * 8, "XML_MALFORMED"),
        "empty-body": (b"", "XML_MALFORMED"),
        "bad-encoding": (good.replace("Thử".encode(), b"Th\xff", 1), "XML_MALFORMED"),
        "not-edxml-root": (b"<html><body>hi</body></html>", "EDXML_NAMESPACE"),
        "wrong-namespace": (good.replace(ns, b"http://example.org/edxml"), "EDXML_NAMESPACE"),
        "billion-laughs": (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                           b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
                           b"<l>&c;</l>", "XML_FORBIDDEN"),
        "external-entity": (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                            b"<r>&x;</r>", "XML_FORBIDDEN"),
        "parameter-entity": (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd">'
                             b" %p;]><r/>", "XML_FORBIDDEN"),
        "doctype-only": (b'<?xml version="1.0"?><!DOCTYPE edXMLEnvelope><r/>', "XML_FORBIDDEN"),
        "external-dtd": (b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>', "XML_FORBIDDEN"),
        "xinclude": (good.replace(b"<edXML:Subject>", b'<edXML:Subject><xi:include '
                                  b'xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>', 1),
                     "XML_FORBIDDEN"),
        "too-deep": (b"<a>" * 200 + b"</a>" * 200, "XML_TOO_DEEP"),
        "oversize": (good.replace(b"</edXML:Subject>", b"x" * MAX_BYTES + b"</edXML:Subject>", 1), "XML_TOO_LARGE"),
        "processing-instruction-added": (good.replace(b"<edXML:Subject>", b"<?evil x?><edXML:Subject>", 1),
                                         "SIG_DIGEST"),
    }


def _amqp_cases(relay: Relay) -> dict[str, tuple[bytes, str]]:
    pki = relay.settings.pki
    root = devpki.load_root(pki)
    cases = {f"sig-{name}": (build(pki, root), code)
             for name, build, code in corpus.CASES if code is not None}
    good = corpus.signed(corpus.agency_key(pki))
    cases.update(_parse_cases(good))
    # a valid document of H41's committee, signed by it, handed in through G22's account
    cases["spoofed-sender"] = (relay.document(RECIPIENT, [AMQP_SENDER], subject="giả mạo"), "SENDER_NOT_ALLOWED")
    cases["unknown-recipient"] = (relay.document(AMQP_SENDER, ["999.99.99.H99"]), "RECIPIENT_UNKNOWN")
    status = build_status(Organ(AMQP_SENDER, "VPCP"), ResponseFor("999.99.99.H99", "1/LT"), "01")
    cases["status-to-unknown-agency"] = (sign(status, relay.key(AMQP_SENDER)), "RECIPIENT_UNKNOWN")
    return cases


# --- AMQP ---------------------------------------------------------------------------------


def _account_url(relay: Relay, agency: str) -> str:
    user = relay.names.agency_user(agency)
    return layout.amqp_url(relay.topology, relay.topology.agencies[agency].hub, user,
                           relay.credentials.password(user))


def _rejections(relay: Relay, agency: str, digests: set[str], timeout: float = 60) -> dict[str, str]:
    """Rejection receipts in ``agency``'s inbox about ``digests``, each verified: digest -> code."""
    trust = TrustStore.load(relay.settings.pki)
    got: dict[str, str] = {}
    client = relay.client(agency)

    def on(item: InboxItem) -> None:
        if item.kind == "receipt":
            r = receipts.verify(item.body, trust).receipt  # signed by a hub we trust, or this raises
            if r.kind == "rejected" and r.document_sha256 in digests:
                got[r.document_sha256] = r.code

    deadline = time.monotonic() + timeout
    while set(got) != digests and time.monotonic() < deadline:
        client.fetch(on, limit=500, wait=0.5)
    return got


def _parked(relay: Relay, hub: str, digests: set[str], timeout: float = 60) -> dict[str, str]:
    got: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while set(got) < digests and time.monotonic() < deadline:
        for r in relay.drain(hub, layout.Q_PARKING, count=len(digests), timeout=2):
            got[hashlib.sha256(r.body).hexdigest()] = str(r.headers.get("lt-code"))
    return got


@pytest.fixture(scope="module")
def amqp_results(relay: Relay) -> dict[str, tuple[str, str | None, str | None]]:
    """Every AMQP case published raw to G22's entry exchange: name -> (expected, parked, receipt)."""
    cases = _amqp_cases(relay)
    url = _account_url(relay, AMQP_SENDER)
    exchange = layout.agency_exchange(AMQP_SENDER)
    for body, _code in cases.values():
        transport.publish(url, exchange, "", body, message_id=hashlib.sha256(body).hexdigest(), user_id=None,
                          headers={"lt-kind": "edxml"})
    digests = {hashlib.sha256(body).hexdigest(): name for name, (body, _) in cases.items()}
    parked = _parked(relay, "national", set(digests))
    told = _rejections(relay, AMQP_SENDER, set(digests))
    return {name: (cases[name][1], parked.get(d), told.get(d)) for d, name in digests.items()}


AMQP_NAMES = [f"sig-{n}" for n, _, c in corpus.CASES if c is not None] + [
    "truncated", "binary-garbage", "empty-body", "bad-encoding", "not-edxml-root", "wrong-namespace",
    "billion-laughs", "external-entity", "parameter-entity", "doctype-only", "external-dtd", "xinclude",
    "too-deep", "oversize", "processing-instruction-added", "spoofed-sender", "unknown-recipient",
    "status-to-unknown-agency"]


@pytest.mark.parametrize("name", AMQP_NAMES)
def test_amqp_hostile_case(name: str, amqp_results: dict[str, tuple[str, str | None, str | None]]) -> None:
    """Parked at the entry hub with its code, and the sender told by a hub-signed rejection."""
    expected, parked, told = amqp_results[name]
    assert (parked, told) == (expected, expected)


def test_amqp_injected_headers(relay: Relay) -> None:
    """Headers only hubs may set: a trace from an agency is refused (TRACE_INVALID, sender told);
    a message posing as a hub receipt is refused (SENDER_NOT_ALLOWED, parked, no receipt about a
    receipt); a forged origin header is ignored (who sent it is the exchange it came through)."""
    url, exchange = _account_url(relay, AMQP_SENDER), layout.agency_exchange(AMQP_SENDER)
    traced = relay.document(AMQP_SENDER, [RECIPIENT], subject="vết giả")
    as_receipt = relay.document(AMQP_SENDER, [RECIPIENT], subject="giả biên nhận")
    origin = relay.document(AMQP_SENDER, [RECIPIENT], subject="nguồn giả")
    for body, headers in ((traced, {"lt-trace": ["forged.token"]}), (as_receipt, {"lt-kind": "receipt"}),
                          (origin, {"lt-origin": "link:H41", "lt-replay": "x"})):
        transport.publish(url, exchange, "", body, message_id=hashlib.sha256(body).hexdigest(), user_id=None,
                          headers=headers)
    d_traced, d_receipt = (hashlib.sha256(b).hexdigest() for b in (traced, as_receipt))
    parked = _parked(relay, "national", {d_traced, d_receipt})
    assert parked == {d_traced: "TRACE_INVALID", d_receipt: "SENDER_NOT_ALLOWED"}
    assert _rejections(relay, AMQP_SENDER, {d_traced}) == {d_traced: "TRACE_INVALID"}
    assert [i.body for i in relay.take(RECIPIENT, 1, accept=lambda i: i.body == origin)] == [origin]


def test_amqp_broker_refuses_other_accounts_exchange_and_user_id(relay: Relay) -> None:
    """The broker itself refuses G22's account on G17's entry exchange, and a forged user_id."""
    url = _account_url(relay, AMQP_SENDER)
    doc = relay.document(AMQP_SENDER, [RECIPIENT], subject="sai cửa")
    with pytest.raises(errors.AccessRefused):
        transport.publish(url, layout.agency_exchange("000.00.00.G17"), "", doc, message_id="x", user_id=None)
    with pytest.raises(errors.LienthongError) as forged:
        transport.publish(url, layout.agency_exchange(AMQP_SENDER), "", doc, message_id="y",
                          user_id=relay.names.hub_user("national"))
    assert "PRECONDITION_FAILED" in forged.value.message or forged.value.code == "ACCESS_REFUSED"
    assert relay.take(RECIPIENT, 1, timeout=3, accept=lambda i: i.body == doc) == []


def test_amqp_replay_is_delivered_once(relay: Relay) -> None:
    """The same signed bytes sent three times reach the recipient's inbox once (counted raw, before
    any client-side deduplication)."""
    doc = relay.document(AMQP_SENDER, [RECIPIENT], subject="gửi lại")
    url, exchange = _account_url(relay, AMQP_SENDER), layout.agency_exchange(AMQP_SENDER)
    for _ in range(3):
        transport.publish(url, exchange, "", doc, message_id=hashlib.sha256(doc).hexdigest(), user_id=None)
    relay.wait_idle()
    copies = [r for r in relay.drain("H41", layout.inbox_queue(RECIPIENT), count=50, timeout=5) if r.body == doc]
    assert len(copies) == 1


# --- REST gateway -------------------------------------------------------------------------


class Gateway:
    def __init__(self, relay: Relay) -> None:
        self.port, self.server = serve(create_app(relay.settings))
        self.token = issue_token(relay.settings, REST_SENDER)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, token: str | None = "mine") -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {self.token if token == 'mine' else token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if body is not None:
            req.add_header("Content-Type", "application/xml")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _expired_signer(relay: Relay, agency: str) -> SigningKey:
    old = devpki.issue(devpki.load_root(relay.settings.pki), "expired", uid=agency,
                       not_before=datetime.now(UTC) - timedelta(days=40), days=10)
    return SigningKey(old.key, old.cert)


def _unsigned(relay: Relay, sender: str, recipient: str = RECIPIENT) -> bytes:
    return build_document(Organ(sender, relay.topology.agencies[sender].name), [Organ(recipient)],
                          subject="chưa ký")


@pytest.fixture(scope="module")
def rest_results(relay: Relay) -> dict[str, tuple[str, int, str]]:
    """name -> (expected code, HTTP status, code seen: in the JSON error, or in the signed rejection)."""
    gw = Gateway(relay)
    good = relay.document(REST_SENDER, [RECIPIENT])
    local = {  # refused by the gateway itself
        "rest-malformed": (good[:300], "XML_MALFORMED", {}, "mine"),
        "rest-external-entity": (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                                 b"<r>&x;</r>", "XML_FORBIDDEN", {}, "mine"),
        "rest-oversize": (good.replace(b"</edXML:Subject>", b"x" * MAX_BYTES + b"</edXML:Subject>", 1),
                          "XML_TOO_LARGE", {}, "mine"),
        "rest-wrong-namespace": (good.replace(b"http://www.mic.gov.vn/TBT/QCVN_102_2016", b"urn:x"),
                                 "EDXML_NAMESPACE", {}, "mine"),
        "rest-spoofed-sender": (relay.document(RECIPIENT, [REST_SENDER]), "SENDER_NOT_ALLOWED", {}, "mine"),
        "rest-forged-agency-header": (relay.document(RECIPIENT, [REST_SENDER], subject="x-agency"),
                                      "SENDER_NOT_ALLOWED", {"X-Agency": RECIPIENT, "X-Organ-Id": RECIPIENT}, "mine"),
        "rest-no-token": (good, "UNAUTHORIZED", {}, None),
        "rest-forged-token": (good, "UNAUTHORIZED", {}, "forged-" + "a" * 40),
    }
    at_hub = {  # accepted by the gateway (it only reads), refused by the hub
        "rest-unsigned": (_unsigned(relay, REST_SENDER), "SIG_MISSING"),
        "rest-wrapping-object": (_wrap_object(relay.document(REST_SENDER, [RECIPIENT], subject="bọc")), "SIG_PROFILE"),
        "rest-moved-signature": (_moved_signature(relay.document(REST_SENDER, [RECIPIENT], subject="dời")),
                                 "SIG_PROFILE"),
        "rest-tampered": (relay.document(REST_SENDER, [RECIPIENT], subject="sửa").replace(
            "sửa".encode(), "sữa".encode(), 1), "SIG_DIGEST"),
        "rest-revoked": (relay.document(REST_SENDER, [RECIPIENT], signer=REVOKED, subject="thu hồi"), "CERT_REVOKED"),
        "rest-expired": (sign(_unsigned(relay, REST_SENDER), _expired_signer(relay, REST_SENDER)), "CERT_EXPIRED"),
        "rest-unknown-recipient": (relay.document(REST_SENDER, ["999.99.99.H99"]), "RECIPIENT_UNKNOWN"),
    }
    out: dict[str, tuple[str, int, str]] = {}
    try:
        for name, (body, code, headers, token) in local.items():
            status, raw = gw.call("POST", "/v1/documents", body, headers, token)
            out[name] = (code, status, json.loads(raw).get("code", ""))
        sent: dict[str, tuple[str, int]] = {}
        for name, (body, _code) in at_hub.items():
            status, raw = gw.call("POST", "/v1/documents", body)
            sent[json.loads(raw).get("message_id", name)] = (name, status)
        # the signed rejections reach the gateway store: verify each and map it to what was sent
        trust = TrustStore.load(relay.settings.pki)
        told: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while set(told) < set(sent) and time.monotonic() < deadline:
            _, listing = gw.call("GET", "/v1/documents/received?include_receipts=true")
            for item in json.loads(listing):
                if item["kind"] == "receipt" and str(item["status_code"]).startswith("rejected"):
                    _, body = gw.call("GET", f"/v1/documents/received/{item['message_id']}")
                    r = receipts.verify(body, trust).receipt
                    told[r.document_sha256] = r.code
            time.sleep(0.5)
        for mid, (name, status) in sent.items():
            out[name] = (at_hub[name][1], status, told.get(mid, ""))
    finally:
        gw.server.should_exit = True
    return out


REST_STATUS = {"XML_MALFORMED": 422, "XML_FORBIDDEN": 422, "XML_TOO_LARGE": 413, "EDXML_NAMESPACE": 422,
               "SENDER_NOT_ALLOWED": 403, "UNAUTHORIZED": 401}
REST_NAMES = ["rest-malformed", "rest-external-entity", "rest-oversize", "rest-wrong-namespace",
              "rest-spoofed-sender", "rest-forged-agency-header", "rest-no-token", "rest-forged-token",
              "rest-unsigned", "rest-wrapping-object", "rest-moved-signature", "rest-tampered", "rest-revoked",
              "rest-expired", "rest-unknown-recipient"]


@pytest.mark.parametrize("name", REST_NAMES)
def test_rest_hostile_case(name: str, rest_results: dict[str, tuple[str, int, str]]) -> None:
    """Refused by the gateway with its HTTP status and JSON code, or accepted for relaying (202) and
    then refused by the hub with a signed rejection the agency reads back through the gateway."""
    expected, status, seen = rest_results[name]
    assert (status, seen) == (REST_STATUS.get(expected, 202), expected)


# --- folder drop --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_results(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> the code in failed/<name>.reason.txt (refused locally, or by the hub's signed rejection)."""
    root = tmp_path_factory.mktemp("folder")
    cases = {
        "folder-malformed": b"<edXMLEnvelope><unclosed",
        "folder-external-entity": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                                  b"<r>&x;</r>",
        "folder-too-deep": b"<a>" * 200 + b"</a>" * 200,
        "folder-unsigned": _unsigned(relay, FOLDER_SENDER),
        "folder-wrapping-object": _wrap_object(relay.document(FOLDER_SENDER, [RECIPIENT], subject="bọc")),
        "folder-revoked": relay.document(FOLDER_SENDER, [RECIPIENT], signer=REVOKED, subject="thu hồi"),
        "folder-spoofed-sender": relay.document(RECIPIENT, [FOLDER_SENDER], subject="giả"),
        "folder-unknown-recipient": relay.document(FOLDER_SENDER, ["999.99.99.H99"]),
    }
    adapter = FolderAdapter(relay.client(FOLDER_SENDER), root, None)
    for name, body in cases.items():
        (adapter.dir("outbox") / f"{name}.edxml").write_bytes(body)
    deadline = time.monotonic() + 60
    out: dict[str, str] = {}
    while len(out) < len(cases) and time.monotonic() < deadline:
        adapter.run_once()
        for reason in adapter.dir("failed").glob("*.reason.txt"):
            out[reason.name.removesuffix(".edxml.reason.txt")] = reason.read_text().split(":", 1)[0]
        time.sleep(0.3)
    # the hub's rejections arrived as signed receipts in receipts/
    trust = TrustStore.load(relay.settings.pki)
    told = {receipts.verify(f.read_bytes(), trust).receipt.code for f in adapter.dir("receipts").glob("*.xml")}
    out["receipts"] = ",".join(sorted(told))
    return out


FOLDER_EXPECTED = {
    "folder-malformed": "XML_MALFORMED", "folder-external-entity": "XML_FORBIDDEN", "folder-too-deep": "XML_TOO_DEEP",
    "folder-unsigned": "SIG_MISSING", "folder-wrapping-object": "SIG_PROFILE", "folder-revoked": "CERT_REVOKED",
    "folder-spoofed-sender": "SENDER_NOT_ALLOWED", "folder-unknown-recipient": "RECIPIENT_UNKNOWN",
}


@pytest.mark.parametrize("name", sorted(FOLDER_EXPECTED))
def test_folder_hostile_case(name: str, folder_results: dict[str, str]) -> None:
    """The file lands in failed/ with its code (the hub's refusals arrive as signed receipts)."""
    assert folder_results.get(name) == FOLDER_EXPECTED[name]


def test_folder_hub_refusals_came_as_signed_receipts(folder_results: dict[str, str]) -> None:
    assert folder_results["receipts"] == "CERT_REVOKED,RECIPIENT_UNKNOWN,SENDER_NOT_ALLOWED,SIG_MISSING,SIG_PROFILE"


# --- afterwards ---------------------------------------------------------------------------


def test_no_worker_crashed_and_the_relay_still_delivers(
        relay: Relay, amqp_results: object, rest_results: object, folder_results: object) -> None:
    """After every attack: all hub workers run, their logs hold no traceback, and a good document
    from each sender still arrives once."""
    assert all(p.poll() is None for procs in relay.procs.values() for p in procs)
    assert "Traceback" not in relay.log_text()
    docs = [relay.document(s, [RECIPIENT], subject=f"sau tấn công {s}")
            for s in (AMQP_SENDER, REST_SENDER, FOLDER_SENDER)]
    for doc, sender in zip(docs, (AMQP_SENDER, REST_SENDER, FOLDER_SENDER), strict=True):
        relay.client(sender).send(doc)
    got = relay.take(RECIPIENT, 3, accept=lambda i: i.body in docs)
    assert sorted(i.body for i in got) == sorted(docs)

