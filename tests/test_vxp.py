"""The national axis' client protocol under /vxp, against the real broker, the real hubs and a real
HTTPS gateway, spoken by a client written from the protocol's facts (tests/vxp_client.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.gateway import create_app
from adapters.https import server_options
from adapters.vxp import ERROR_CODES, secret_book
from broker.core import errors
from broker.core.validation import check
from broker.relay import devpki
from tests.relay import Relay, serve
from tests.vxp_client import VIETNAM, VxpClient, sdk_hash

pytestmark = pytest.mark.broker

A, B, C = "000.00.51.H41", "001.00.31.H14", "000.00.52.H41"


@pytest.fixture(scope="module")
def endpoint(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext]]:
    """`gateway run` as a document system meets it: HTTPS with a certificate of the deployment's CA."""
    d = tmp_path_factory.mktemp("vxp-tls")
    ca = devpki.make_root("gateway CA")
    (d / "ca.pem").write_bytes(devpki.pem_cert(ca.cert))
    devpki.write_pair((d / "server.key", d / "server.pem"), devpki.issue_server(ca, ["localhost", "127.0.0.1"]))
    app = create_app(relay.settings, connect=relay.client, max_bytes=200_000)
    port, server = serve(app, **server_options(d / "server.pem", d / "server.key", None))
    yield f"https://127.0.0.1:{port}/vxp", ssl.create_default_context(cafile=str(d / "ca.pem"))
    server.should_exit = True


@pytest.fixture(scope="module")
def client(relay: Relay, endpoint: tuple[str, ssl.SSLContext]) -> Callable[..., VxpClient]:
    """A new client object of an agency (its timestamp is fixed when it is made, as the SDK's)."""
    book = secret_book(relay.settings)

    def make(agency: str, **kw: Any) -> VxpClient:
        return VxpClient(endpoint[0], agency, book.ensure(agency), context=endpoint[1], **kw)

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
        relay: Relay, client: Callable[..., VxpClient], endpoint: tuple[str, ssl.SSLContext]) -> None:
    """The HMAC is checked with the caller's own secret; systemid must be an agency with a secret;
    a signed value must be the header sent."""
    wrong = VxpClient(endpoint[0], A, "not-the-secret", context=endpoint[1])
    _fails(wrong.received(), "UNAUTHORIZED")
    stranger = VxpClient(endpoint[0], "999.99.99.H99", "whatever", context=endpoint[1])
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


def test_secrets_are_private_and_rotate(relay: Relay, endpoint: tuple[str, ssl.SSLContext]) -> None:
    """`lienthong vxp secret` prints the same secret until --rotate; the file is 0600; after a
    rotation the old secret no longer verifies and the new one does."""
    first = relay.cli("vxp", "secret", C)
    assert first.returncode == 0 and first.stdout.strip()
    assert relay.cli("vxp", "secret", C).stdout == first.stdout
    path = secret_book(relay.settings).directory / f"{C}.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    _ok(VxpClient(endpoint[0], C, first.stdout.strip(), context=endpoint[1]).agencies())
    rotated = relay.cli("vxp", "secret", C, "--rotate")
    assert rotated.returncode == 0 and rotated.stdout != first.stdout
    _fails(VxpClient(endpoint[0], C, first.stdout.strip(), context=endpoint[1]).agencies(), "UNAUTHORIZED")
    _ok(VxpClient(endpoint[0], C, rotated.stdout.strip(), context=endpoint[1]).agencies())
    refused = relay.cli("vxp", "secret", "999.99.99.H99")
    assert refused.returncode == 1 and "ERROR AGENCY_UNKNOWN" in refused.stderr


def test_answers_are_ascii_json_even_for_vietnamese_names(endpoint: tuple[str, ssl.SSLContext],
                                                          client: Callable[..., VxpClient]) -> None:
    """Some clients read the answer as US-ASCII: every byte of it is ASCII, names included."""
    url, headers, body = client(A).prepare("getAgenciesList", b"{}")
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                timeout=30, context=endpoint[1]) as resp:
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

