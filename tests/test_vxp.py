"""The national axis' client protocol under /vxp, against the real broker, the real hubs and a real
HTTPS gateway with mutual TLS, spoken by a client written from the protocol's facts
(tests/vxp_client.py) that presents its agency's client certificate as the vendor SDK does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import sys
import time
import unicodedata
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.gateway import create_app
from adapters.https import server_options
from adapters.vxp import ERROR_CODES, secret_book
from broker.core import errors
from broker.core.validation import check
from broker.relay import devpki
from tests.relay import ROOT, Relay, serve
from tests.vxp_client import VIETNAM, VxpClient, sdk_hash, tls_context

pytestmark = pytest.mark.broker

A, B, C = "000.00.51.H41", "001.00.31.H14", "000.00.52.H41"


@pytest.fixture(scope="module")
def gateway_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA of the gateway's own TLS certificate (what document systems trust), and that certificate."""
    d = tmp_path_factory.mktemp("vxp-tls")
    ca = devpki.make_root("gateway CA")
    (d / "ca.pem").write_bytes(devpki.pem_cert(ca.cert))
    devpki.write_pair((d / "server.key", d / "server.pem"), devpki.issue_server(ca, ["localhost", "127.0.0.1"]))
    return d


def _gateway(relay: Relay, gateway_ca: Path, **options: Any) -> tuple[str, Any]:
    """`gateway run --client-ca PKI` (the trust store directory: the agencies' root and its CRL)."""
    app = create_app(relay.settings, connect=relay.client, max_bytes=200_000, client_ca=relay.settings.pki, **options)
    port, server = serve(app, **server_options(gateway_ca / "server.pem", gateway_ca / "server.key",
                                                 relay.settings.pki))
    return f"https://127.0.0.1:{port}/vxp", server


@pytest.fixture(scope="module")
def endpoint(relay: Relay, gateway_ca: Path) -> Iterator[str]:
    """`gateway run` as a document system meets it: HTTPS with a certificate of the deployment's CA,
    asking each client for its agency's certificate (mutual TLS, the default for /vxp)."""
    url, server = _gateway(relay, gateway_ca)
    yield url
    server.should_exit = True


@pytest.fixture(scope="module")
def tls_for(relay: Relay, gateway_ca: Path) -> Callable[[str | None], ssl.SSLContext]:
    """The TLS context of an agency's document system: the gateway's CA trusted, the agency's own
    certificate (subject UID = its code) presented; None: no certificate."""
    def context(agency: str | None) -> ssl.SSLContext:
        if agency is None:
            return tls_context(gateway_ca / "ca.pem")
        key, cert = relay.settings.keys.agency(agency)
        return tls_context(gateway_ca / "ca.pem", cert, key)

    return context


@pytest.fixture(scope="module")
def client(relay: Relay, endpoint: str, tls_for: Callable[[str | None], ssl.SSLContext]) -> Callable[..., VxpClient]:
    """A new client object of an agency (its timestamp is fixed when it is made, as the SDK's),
    presenting the agency's certificate unless ``cert_of`` names another agency (or None)."""
    book = secret_book(relay.settings)
    own = object()

    def make(agency: str, cert_of: Any = own, **kw: Any) -> VxpClient:
        return VxpClient(endpoint, agency, book.ensure(agency), context=tls_for(agency if cert_of is own else cert_of),
                         **kw)

    return make


def _ok(answer: dict[str, Any]) -> Any:
    assert answer["status"] == "OK" and answer["ErrorCode"] == "0", answer
    return answer.get("data")


def _fails(answer: dict[str, Any], code: str) -> str:
    assert answer["status"] == "FAIL" and answer["ErrorCode"] == ERROR_CODES[code], answer
    assert answer["ErrorDesc"].startswith(code + ": ") and len(answer["ErrorDesc"]) > len(code) + 10
    return str(answer["ErrorDesc"])


def _wait_for(fetch: Callable[[], list[dict[str, Any]]], found: Callable[[dict[str, Any]], bool],
              timeout: float = 45) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [item for item in fetch() if found(item)]
        if hits:
            return hits[0]
        time.sleep(0.5)
    raise AssertionError("not there in time")


def test_full_cycle(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """A sends a document with sendEdoc (body + CRLF, hash-file unpadded); B lists it, gets the exact
    signed bytes (which verify end to end), marks it done (it leaves the list), answers with a
    business status 03 through sendEdoc; A's sent list shows it delivered with B's 03, and both
    see the agency list."""
    doc = relay.document(A, [B], subject="Công văn qua trục")
    doc_id = _ok(client(A).send_edoc(doc, to=[B]))["DocId"]
    assert doc_id == hashlib.sha256(doc).hexdigest()  # docId is lienthong's message id

    # each call from a new client object, as a document system's polling cycle makes one: the
    # same object asking the same thing twice would send the same signed request (a replay)
    item = _wait_for(lambda: _ok(client(B).received()), lambda i: i["docId"] == doc_id)
    assert (item["from"], item["to"], item["messageType"], item["status"]) == (A, B, "edoc", "initial")
    got = client(B).get_edoc_bytes(doc_id)
    assert got == doc  # the CRLF after the body is not part of the message
    assert check(got, trust=relay.client(B).trust, topology=relay.topology).message.sender.organ_id == A
    assert _ok(client(B).count())["count"] == 1
    _ok(client(B).update_status(doc_id, "processing"))
    assert [i["status"] for i in _ok(client(B).received()) if i["docId"] == doc_id] == ["processing"]
    _ok(client(B).update_status(doc_id, "done"))
    assert [i for i in _ok(client(B).received()) if i["docId"] == doc_id] == []
    assert _ok(client(B).count())["count"] == 0

    status = relay.client(B).status_for(doc, "03", key=relay.key(B))
    status_id = _ok(client(B).send_edoc(status, messagetype="status"))["DocId"]
    assert _wait_for(lambda: _ok(client(B).sent("status")), lambda i: i["senderDocId"] == status_id)

    row = _wait_for(lambda: _ok(client(A).sent()),
                    lambda i: i["senderDocId"] == doc_id and i["receiveStatus"] == "03")
    assert (row["toCode"], row["sendStatus"], row["title"]) == (B, "delivered", "Công văn qua trục")
    assert row["receivedTime"] and row["receiveStatusDesc"] == "accepted"

    status_item = _wait_for(lambda: _ok(client(A).received("status")), lambda i: i["from"] == B)
    assert status_item["messageType"] == "status" and _ok(client(A).count("Status"))["count"] >= 1
    assert client(A).get_edoc_bytes(status_item["docId"]) == status
    a = client(A)
    listed = {x["code"]: x for x in _ok(a.agencies())}
    assert set(listed) == set(relay.topology.agencies) and listed[B]["name"] == relay.topology.agencies[B].name
    province = listed["000.00.00.H41"]  # the directory's mail, parent and former code, as the axis lists them
    assert province["mail"] == "vanthu@nghean.gov.vn" and province["pid"] == "0"
    assert (listed[A]["pid"], listed[A]["oldCode"]) == (province["id"], "000.12.51.H41")
    assert len({x["id"] for x in listed.values()}) == len(listed)


def test_the_relay_underneath_judges_what_comes_in(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """A document From A but signed with C's key passes the gateway's early reading; the hub refuses
    it (SIGNER_MISMATCH) and A's sent list says so, with the code; B never sees it."""
    doc = relay.document(A, [B], subject="ký sai", signer=C)
    doc_id = _ok(client(A).send_edoc(doc))["DocId"]
    row = _wait_for(lambda: _ok(client(A).sent()), lambda i: i["senderDocId"] == doc_id and i["sendStatus"] != "sent")
    assert row["sendStatus"] == "rejected" and row["sendStatusDesc"].startswith("SIGNER_MISMATCH")
    assert doc_id not in {i["docId"] for i in _ok(client(B).received())}


def test_a_wrong_hmac_an_unknown_caller_and_a_forged_header_are_refused(
        relay: Relay, client: Callable[..., VxpClient], endpoint: str,
        tls_for: Callable[[str | None], ssl.SSLContext]) -> None:
    """The HMAC is checked with the caller's own secret; systemid must be an agency with a secret;
    a signed value must be the header sent."""
    wrong = VxpClient(endpoint, A, "not-the-secret", context=tls_for(A))
    _fails(wrong.received(), "UNAUTHORIZED")
    assert wrong.last_status == 401
    stranger = VxpClient(endpoint, "999.99.99.H99", "whatever", context=tls_for(A))
    assert "not an agency" in _fails(stranger.received(), "UNAUTHORIZED")
    c = client(A)
    url, headers, body = c.prepare("getReceivedEdocList", b"")
    headers["XroadVnpt-systemid"] = B  # signed as A, sent as B: B's secret does not verify it
    assert "UNAUTHORIZED" in c.post(url, headers, body)["ErrorDesc"]
    url, headers, body = c.prepare("getReceivedEdocList", b"", messagetype="edoc")
    headers["XroadVnpt-messagetype"] = "status"  # the signed messagetype says edoc
    _fails(c.post(url, headers, body), "HEADER_MISMATCH")


def test_a_stale_timestamp_is_refused(client: Callable[..., VxpClient]) -> None:
    """A request signed 20 minutes ago (or ahead) is outside the 15-minute window."""
    _fails(client(A, when=datetime.now(VIETNAM) - timedelta(minutes=20)).received(), "REQUEST_STALE")
    _fails(client(A, when=datetime.now(VIETNAM) + timedelta(minutes=20)).received(), "REQUEST_STALE")
    _ok(client(A, when=datetime.now(VIETNAM) - timedelta(minutes=5)).received())


def test_a_replay_is_refused_but_one_client_object_may_make_many_calls(
        relay: Relay, client: Callable[..., VxpClient]) -> None:
    """The same signed request sent twice: the second is refused and nothing is sent twice.  One
    client object (one fixed timestamp, one header map with the keys of earlier calls still in it
    and signed) makes several different calls."""
    c = client(A)
    doc = relay.document(A, [B], subject="một lần")
    doc_id = _ok(c.send_edoc(doc))["DocId"]
    _fails(c.replay(), "REQUEST_REPLAYED")
    _ok(c.received())
    _fails(c.replay(), "REQUEST_REPLAYED")
    c.signed = (*c.signed, "from", "hash-file")  # stale keys of the sendEdoc, signed in later calls
    _ok(c.sent())
    _ok(c.agencies())
    _wait_for(lambda: _ok(client(B).received()), lambda i: i["docId"] == doc_id)
    time.sleep(2)
    assert [i["docId"] for i in _ok(client(B).received())].count(doc_id) == 1


def test_another_agencys_doc_id_is_not_found_and_tells_nothing(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """C asks for, and tries to mark, a document that B received: the answer is NOT_FOUND, the
    same as for an id that never existed, and names nothing of the document."""
    doc = relay.document(A, [B], subject="bí mật")
    doc_id = _ok(client(A).send_edoc(doc))["DocId"]
    _wait_for(lambda: _ok(client(B).received()), lambda i: i["docId"] == doc_id)
    theirs = _fails(client(C).get_edoc(doc_id), "NOT_FOUND")
    never = _fails(client(C).get_edoc("0" * 64), "NOT_FOUND")
    assert theirs.replace(doc_id, "X") == never.replace("0" * 64, "X")
    assert "bí mật" not in theirs and A not in theirs and B not in theirs
    _fails(client(C).update_status(doc_id, "done"), "NOT_FOUND")
    assert [i["status"] for i in _ok(client(B).received()) if i["docId"] == doc_id] == ["initial"]


def test_hash_file_must_match_the_body(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """A body that is not what hash-file says is refused and nothing is sent; the SDK's unpadded hex
    is what is expected (the padded hex of the same digest differs whenever a byte is below 0x10)."""
    doc = relay.document(A, [B], subject="băm sai")
    _fails(client(A).send_edoc(doc, hash_file=sdk_hash(doc + b"x")), "HASH_MISMATCH")
    padded = hashlib.sha256(doc).hexdigest()
    if padded != sdk_hash(doc):
        _fails(client(A).send_edoc(doc, hash_file=padded), "HASH_MISMATCH")
    time.sleep(2)
    assert hashlib.sha256(doc).hexdigest() not in {i["docId"] for i in _ok(client(B).received())}


def test_bodies_are_bounded(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """sendEdoc over the message limit (200 kB for this gateway) is XML_TOO_LARGE, answered after the
    body was read to its end (up to twice the limit: the SDK writes all before it reads); any other
    call with more than 64 KiB of body is BODY_TOO_LARGE."""
    big = relay.document(A, [B], size=200_000)  # 270 kB encoded: over the limit, under the 400 kB read to its end
    assert 200_000 < len(big) < 400_000
    _fails(client(A).send_edoc(big), "XML_TOO_LARGE")
    c = client(A)  # the same, streamed without a length (chunked): read to its end, then refused
    url, headers, _ = c.prepare("sendEdoc", b"", **{"from": A, "hash-file": sdk_hash(big), "messagetype": "edoc"})
    chunks = iter([big[i:i + 65536] for i in range(0, len(big), 65536)])
    _fails(c.post(url, headers, chunks), "XML_TOO_LARGE")
    _fails(client(A).call("getAgenciesList", b"{" + b" " * 70_000 + b"}"), "BODY_TOO_LARGE")
    _fails(client(A).call("noSuchCall", b"{}"), "OPERATION_UNKNOWN")


def test_secrets_are_private_and_rotate(relay: Relay, endpoint: str,
                                       tls_for: Callable[[str | None], ssl.SSLContext]) -> None:
    """`lienthong vxp secret` prints the same secret until --rotate; the file is 0600; after a
    rotation the old secret no longer verifies and the new one does."""
    first = relay.cli("vxp", "secret", C)
    assert first.returncode == 0 and first.stdout.strip()
    assert relay.cli("vxp", "secret", C).stdout == first.stdout
    path = secret_book(relay.settings).directory / f"{C}.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    _ok(VxpClient(endpoint, C, first.stdout.strip(), context=tls_for(C)).agencies())
    rotated = relay.cli("vxp", "secret", C, "--rotate")
    assert rotated.returncode == 0 and rotated.stdout != first.stdout
    _fails(VxpClient(endpoint, C, first.stdout.strip(), context=tls_for(C)).agencies(), "UNAUTHORIZED")
    _ok(VxpClient(endpoint, C, rotated.stdout.strip(), context=tls_for(C)).agencies())
    refused = relay.cli("vxp", "secret", "999.99.99.H99")
    assert refused.returncode == 1 and "ERROR AGENCY_UNKNOWN" in refused.stderr


def test_answers_are_ascii_json_even_for_vietnamese_names(tls_for: Callable[[str | None], ssl.SSLContext],
                                                          client: Callable[..., VxpClient]) -> None:
    """Some clients read the answer as US-ASCII: every byte of it is ASCII, names included."""
    url, headers, body = client(A).prepare("getAgenciesList", b"{}")
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                timeout=30, context=tls_for(A)) as resp:
        raw = resp.read()
    assert raw.isascii() and "Nghệ" in json.dumps(json.loads(raw), ensure_ascii=False)


def test_every_error_code_has_a_protocol_number() -> None:
    """Each lienthong code maps to its own ErrorCode, none twice, none "0"."""
    codes = {c for c, _ in errors.codes()}
    assert codes <= set(ERROR_CODES), sorted(codes - set(ERROR_CODES))
    assert len(set(ERROR_CODES.values())) == len(ERROR_CODES) and "0" not in ERROR_CODES.values()


def test_a_sent_edoc_body_is_the_signed_file(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """A client that sends the file without the CRLF is served too (the hash speaks for the bytes)."""
    doc = relay.document(A, [B], subject="không CRLF")
    c = client(A)
    url, headers, _ = c.prepare("sendEdoc", b"", **{"from": A, "hash-file": sdk_hash(doc), "messagetype": "edoc"})
    doc_id = _ok(c.post(url, headers, doc))["DocId"]
    _wait_for(lambda: _ok(client(B).received()), lambda i: i["docId"] == doc_id)
    assert client(B).get_edoc_bytes(doc_id) == doc
    assert base64.b64decode(client(B).get_edoc(doc_id)["data"]) == doc



# --- the axis protocol bound to a key ----------------------------------------------------------------


def test_a_captured_header_pair_is_useless_without_the_agencys_key(
        relay: Relay, client: Callable[..., VxpClient], endpoint: str,
        tls_for: Callable[[str | None], ssl.SSLContext]) -> None:
    """The review's attack: the signed header pair of B's getAgenciesList (systemid and timestamp
    signed, docId and status never) is captured and replayed as getEdoc of B's document and as
    updateStatus done.  Without B's client certificate (none, or another agency's) both are refused
    with 401, the document is not served, and B still finds it waiting and can take it."""
    doc = relay.document(A, [B], subject="bắt được tiêu đề")
    doc_id = _ok(client(A).send_edoc(doc, to=[B]))["DocId"]
    _wait_for(lambda: _ok(client(B).received()), lambda i: i["docId"] == doc_id)
    victim = client(B)
    url, captured, _ = victim.prepare("getAgenciesList", b"{}")  # what a listener on the path saw
    base = url.rsplit("/", 1)[0]
    for attacker in (None, C):
        thief = VxpClient(endpoint, B, "unknown", context=tls_for(attacker))
        stolen = {**captured, "XroadVnpt-docId": doc_id, "XroadVnpt-filePath": "/tmp"}
        answer = thief.post(f"{base}/getEdoc", stolen, b"{}")
        assert thief.last_status == 401 and "data" not in answer
        _fails(answer, "UNAUTHORIZED")
        hide = {**captured, "XroadVnpt-docid": doc_id, "XroadVnpt-status": "done"}
        assert thief.post(f"{base}/updateStatus", hide, b"{}")["status"] == "FAIL" and thief.last_status == 401
    assert [i["status"] for i in _ok(client(B).received()) if i["docId"] == doc_id] == ["initial"]
    assert client(B).get_edoc_bytes(doc_id) == doc
    _ok(victim.post(url, captured, b"{}"))  # the pair itself, from B's own system, still works


def test_a_certificate_must_be_the_agency_that_systemid_names(
        client: Callable[..., VxpClient], tls_for: Callable[[str | None], ssl.SSLContext]) -> None:
    """A correctly signed request of A over a connection with C's certificate is refused (401); the
    same request with A's certificate is served."""
    answer = _fails((c := client(A, cert_of=C)).agencies(), "UNAUTHORIZED")
    assert c.last_status == 401 and C in answer and A in answer
    _ok(client(A).agencies())


def test_hmac_only_is_explicit_and_keeps_requests_to_five_minutes(
        relay: Relay, gateway_ca: Path, endpoint: str, tls_for: Callable[[str | None], ssl.SSLContext]) -> None:
    """Without --vxp-hmac-only a request without a client certificate is refused (401).  With it,
    such a request is served, but only within 5 minutes of its timestamp even though the settings
    allow 15, and the gateway warns at start (the log, and the command's own line)."""
    from structlog.testing import capture_logs

    book = secret_book(relay.settings)
    with capture_logs() as logs:
        url, server = _gateway(relay, gateway_ca, vxp_hmac_only=True)
    try:
        assert any("without a client certificate" in e["event"] and e["log_level"] == "warning" for e in logs)
        bare = tls_for(None)
        now = datetime.now(VIETNAM)
        _ok(VxpClient(url, A, book.ensure(A), context=bare, when=now - timedelta(minutes=4)).agencies())
        stale = VxpClient(url, A, book.ensure(A), context=bare, when=now - timedelta(minutes=6))
        _fails(stale.agencies(), "REQUEST_STALE")
        assert stale.last_status == 401
    finally:
        server.should_exit = True
    strict = VxpClient(endpoint, A, book.ensure(A), context=bare)  # the default gateway
    assert "mutual TLS" in _fails(strict.agencies(), "UNAUTHORIZED") and strict.last_status == 401
    started = subprocess.Popen([sys.executable, "-m", "broker.cli", "gateway", "run", "--insecure-http", "--port", "0",
                                "--vxp-hmac-only"], env=relay.env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert started.stderr is not None
        assert started.stderr.readline().startswith("WARNING: --vxp-hmac-only")
    finally:
        started.terminate()
        started.wait(timeout=30)


MALFORMED = [b"\xff\xfe\xfd", "é".encode(), "é".encode("latin-1"), b"x" * 5000, b"{}", b"[1, 2]", b'{"a": {"b": []}}',
             b"31022026T000000+0000", b"01012026T250000+99999", b"\xc3\x28", b"0" * 64 + b"\xff", b" "]


@pytest.mark.parametrize("header", ["systemid", "timestamp", "sign-header", "hash-header"])
def test_malformed_authentication_headers_get_401_never_500(
        relay: Relay, endpoint: str, client: Callable[..., VxpClient],
        tls_for: Callable[[str | None], ssl.SSLContext], header: str) -> None:
    """Each authentication header replaced by malformed bytes (not UTF-8, non-ASCII, huge, JSON of
    the wrong shape, an impossible date) in a request that is otherwise A's own, over A's
    certificate: every answer is 401 with the JSON envelope, never a server error.  The review's
    case, a non-ASCII hash-header, is among them."""
    import http.client
    from urllib.parse import urlsplit

    _url, headers, _ = client(A).prepare("getAgenciesList", b"{}")
    parts = urlsplit(endpoint)
    for value in MALFORMED:
        sent = {k: v.encode() for k, v in headers.items()}
        sent[f"XroadVnpt-{header}"] = value
        if header == "timestamp":  # a signed set that agrees with the header: only the date is wrong
            sent["XroadVnpt-sign-header"] = json.dumps({"XroadVnpt-systemid": A, "XroadVnpt-timestamp":
                                                        value.decode("latin-1")}).encode()
            secret = secret_book(relay.settings).ensure(A).encode()
            sent["XroadVnpt-hash-header"] = hmac.new(secret, sent["XroadVnpt-sign-header"],
                                                     hashlib.sha256).hexdigest().encode()
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=tls_for(A), timeout=30)
        try:
            conn.putrequest("POST", f"{parts.path}/getAgenciesList")
            for k, v in sent.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", "2")
            conn.endheaders(b"{}")
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        finally:
            conn.close()
        assert status == 401, (header, value, status, body)
        answer = json.loads(body)
        assert answer["status"] == "FAIL" and int(answer["ErrorCode"]) in (101, 102, 103, 104), answer


def test_malformed_call_parameters_are_refused_with_a_code(relay: Relay, client: Callable[..., VxpClient]) -> None:
    """The calls' own parameters, signed or not, malformed (non-ASCII ids, bad dates, a to that is
    not a JSON array, an unknown status, a signed value sent in another encoding): each answer is
    a FAIL envelope with a code (401 where the signed headers do not check out), never 500."""
    doc = relay.document(A, [B], subject="tham số hỏng")
    for operation, body, params in [
            ("getEdoc", b"{}", {"docId": "é" * 70}), ("updateStatus", b"{}", {"docid": "x", "status": "xóa"}),
            ("getReceivedEdocList", b"", {"fromDate": "32/13/2026 99:99:99"}),
            ("getSentEdocList", b"", {"messagetype": "\u00ff"}), ("getReceivedEdocList", b"", {"messagetype": "fax"}),
            ("sendEdoc", doc, {"to": "{not json", "hash-file": sdk_hash(doc), "from": A})]:
        c = client(A)
        answer = c.call(operation, body, **params)
        assert c.last_status in (200, 401) and answer["status"] == "FAIL" and answer["ErrorCode"] != "399", answer


def test_authenticate_refuses_random_headers_without_crashing(relay: Relay) -> None:
    """Three thousand requests of random bytes in every authentication header (and valid-looking
    ones around them, some with a true HMAC over the random signed set so that its parsing is
    reached): authenticate raises only UNAUTHORIZED and its kin, never anything else."""
    import random

    from adapters.vxpauth import authenticate, zone_of

    rng = random.Random(31)
    book = secret_book(relay.settings)
    book.ensure(A)
    pieces = [b"", b"{}", b"[]", b"null", A.encode(), b"\xff", "Nghệ".encode(), b'{"XroadVnpt-systemid": 1}',
              b"07122026T000000+0000", b"a" * 64, b"\x00", b"9" * 400]
    secret = book.ensure(A).encode()
    for _ in range(3000):
        raw = {f"xroadvnpt-{name}": (rng.choice(pieces) if rng.random() < 0.5
                                     else bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80))))
               for name in ("systemid", "timestamp", "sign-header", "hash-header", "sign-header-key")}
        if rng.random() < 0.5:
            raw["xroadvnpt-systemid"] = A.encode()
        if rng.random() < 0.3:  # a true HMAC over the random signed set: the parsing behind it is reached
            raw["xroadvnpt-hash-header"] = hmac.new(secret, raw["xroadvnpt-sign-header"].strip(),
                                                    hashlib.sha256).hexdigest().encode()
        try:
            authenticate(raw, book=book, agencies=relay.topology.agencies, now=datetime.now(VIETNAM), window=900,
                         zone=zone_of("+07:00"))
        except errors.Unauthorized:
            continue
        raise AssertionError(f"accepted random headers: {raw!r}")


def test_a_java_client_presents_its_certificate_through_the_jvms_key_store_properties(
        relay: Relay, endpoint: str, gateway_ca: Path, tmp_path: Path) -> None:
    """The README's steps for a Java document system: its certificate and key packed with
    `openssl pkcs12`, the gateway's CA imported with `keytool`, and nothing else but the JVM's
    standard properties.  A JDK-only client that takes its TLS context from SSLContext.getDefault()
    (what the SDK's SSLContexts.createSystemDefault() returns) and signs its headers as the SDK
    does gets the agency list; without the key-store properties it gets 401."""
    import shutil

    if shutil.which("java") is None or shutil.which("keytool") is None:
        if os.environ.get("CI"):
            pytest.fail("a JDK is not installed (scripts/bootstrap.sh installs one)")
        pytest.skip("a JDK is not installed")
    key, cert = relay.settings.keys.agency(A)
    subprocess.run(["openssl", "pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-name", "dms",
                    "-out", str(tmp_path / "dms.p12"), "-passout", "pass:changeit"], check=True, capture_output=True)
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "lienthong-gateway", "-file",
                    str(gateway_ca / "ca.pem"), "-keystore", str(tmp_path / "trust.p12"), "-storetype", "PKCS12",
                    "-storepass", "changeit"], check=True, capture_output=True)
    trust = [f"-Djavax.net.ssl.trustStore={tmp_path / 'trust.p12'}", "-Djavax.net.ssl.trustStorePassword=changeit",
             "-Djavax.net.ssl.trustStoreType=PKCS12"]
    keys = [f"-Djavax.net.ssl.keyStore={tmp_path / 'dms.p12'}", "-Djavax.net.ssl.keyStorePassword=changeit",
            "-Djavax.net.ssl.keyStoreType=PKCS12"]
    secret = secret_book(relay.settings).ensure(A)

    def java(*flags: str) -> tuple[str, dict[str, Any]]:
        done = subprocess.run(["java", *flags, str(ROOT / "tests" / "VxpSdkClient.java"), endpoint, A, secret],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        status, body = done.stdout.split("\n", 1)
        return status, json.loads(body)

    status, answer = java(*trust, *keys)
    assert status == "HTTP 200" and A in {a["code"] for a in _ok(answer)}
    status, answer = java(*trust)
    assert status == "HTTP 401" and "mutual TLS" in _fails(answer, "UNAUTHORIZED")


def test_error_desc_is_vietnamese_for_the_sdk_and_english_on_request(
        relay: Relay, gateway_ca: Path, tls_for: Callable[[str | None], ssl.SSLContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway run as a deployment runs it (no language set) answers a client that sends no
    Accept-Language, as the vendor's SDK does, with ErrorDesc in Vietnamese; one whose
    Accept-Language prefers English gets English.  ErrorCode, the code before the sentence and
    the HTTP status are the same in both, and the answer stays ASCII JSON (the client reads it as
    US-ASCII) that decodes to NFC Vietnamese.  Refusals of the protocol, of a client certificate
    (401) and of the core's parser (a malformed document) all read in the reader's language."""
    monkeypatch.delenv("LIENTHONG_LANG", raising=False)
    url, server = _gateway(relay, gateway_ca)
    book = secret_book(relay.settings)

    def ask(accept: str | None, operation: str, body: bytes = b"{}", *, cert: str = A,
            **params: str) -> tuple[int, dict[str, Any]]:
        c = VxpClient(url, A, book.ensure(A), context=tls_for(cert))
        target, headers, data = c.prepare(operation, body, **params)
        if accept is not None:
            headers["Accept-Language"] = accept
        answer = c.post(target, headers, data)
        assert c.last_request is not None and ("Accept-Language" in c.last_request[1]) == (accept is not None)
        return c.last_status, answer

    def desc(answer: dict[str, Any], number: str) -> str:
        assert answer["status"] == "FAIL" and answer["ErrorCode"] == number, answer
        assert unicodedata.is_normalized("NFC", answer["ErrorDesc"])
        return str(answer["ErrorDesc"])

    try:
        status, sdk = ask(None, "noSuchCall")
        assert status == 200 and desc(sdk, "106") == "OPERATION_UNKNOWN: giao thức không có thao tác 'noSuchCall'"
        status, en = ask("en-US,en;q=0.9", "noSuchCall")
        assert status == 200 and desc(en, "106") == "OPERATION_UNKNOWN: the protocol has no operation 'noSuchCall'"
        status, sdk = ask(None, "getAgenciesList", cert=C)
        assert status == 401 and desc(sdk, "101") == \
            f"UNAUTHORIZED: chứng thư số máy khách là của cơ quan {C}, nhưng systemid ghi {A}"
        status, en = ask("en", "getAgenciesList", cert=C)
        assert status == 401 and desc(en, "101") == \
            f"UNAUTHORIZED: the client certificate is agency {C}'s, systemid names {A}"
        bad = b"<edXMLEnvelope><unclosed></edXMLEnvelope>"
        params = {"from": A, "messagetype": "edoc", "hash-file": sdk_hash(bad),
                  "Content-Type": "application/octet-stream"}
        status, sdk = ask(None, "sendEdoc", bad + b"\r\n", **params)
        assert status == 200 and desc(sdk, "201").startswith("XML_MALFORMED: không phải XML đúng cú pháp: ")
        status, en = ask("vi;q=0.2, en;q=0.8", "sendEdoc", bad + b"\r\n", **params)
        assert status == 200 and desc(en, "201").startswith("XML_MALFORMED: not well-formed XML: ")
    finally:
        server.should_exit = True
