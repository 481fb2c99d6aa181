"""Every way in, against the real broker: REST gateway, a non-Python AMQP client, the folder drop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.gateway import create_app, issue_token
from adapters.localdb import HandedOver
from broker.core import wire
from broker.core.edxml import Organ, build_document
from tests.relay import ROOT, Relay, serve

pytestmark = pytest.mark.broker

A, B, OTHER = "000.00.51.H41", "001.00.31.H14", "000.00.52.H41"


class Gateway:
    def __init__(self, relay: Relay, max_bytes: int | None = None) -> None:
        self.port, self.server = serve(create_app(relay.settings, connect=relay.client, max_bytes=max_bytes))
        self.tokens = {a: issue_token(relay.settings, a) for a in (A, B, OTHER)}

    def call(self, method: str, path: str, agency: str | None, body: bytes | None = None,
             content_type: str = "application/xml") -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        if agency:
            req.add_header("Authorization", f"Bearer {self.tokens[agency]}")
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, agency: str | None, body: bytes | None = None,
             content_type: str = "application/xml") -> tuple[int, object]:
        status, raw = self.call(method, path, agency, body, content_type)
        return status, json.loads(raw)

    def stop(self) -> None:
        self.server.should_exit = True


@pytest.fixture(scope="module")
def gateway(relay: Relay) -> Iterator[Gateway]:
    g = Gateway(relay)
    yield g
    g.stop()


def _received(gateway: Gateway, agency: str, document_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, items = gateway.json("GET", "/v1/documents/received", agency)
        assert status == 200
        hits = [i for i in items if i["document_id"] == document_id and i["kind"] == "document"]
        if hits:
            return hits[0]
        time.sleep(0.5)
    raise AssertionError(f"{document_id} never reached {agency} through the gateway")


def test_gateway_send_receive_and_isolation(relay: Relay, gateway: Gateway) -> None:
    """A sends through the gateway; B lists and gets the exact bytes and marks them done; another
    agency's token sees nothing of it; A's sent list shows the hubs' receipts."""
    doc = relay.document(A, [B], subject="qua cổng REST")
    status, sent = gateway.json("POST", "/v1/documents", A, doc)
    assert status == 202, sent
    item = _received(gateway, B, sent["document_id"])
    assert item["from"] == A and item["transfer_status"] == "new"
    status, body = gateway.call("GET", f"/v1/documents/received/{item['message_id']}", B)
    assert status == 200 and body == doc
    status, other = gateway.json("GET", f"/v1/documents/received/{item['message_id']}", OTHER)
    assert status == 404 and other["code"] == "NOT_FOUND"
    status, done = gateway.json("PUT", f"/v1/documents/received/{item['message_id']}/transfer-status", B,
                                json.dumps({"status": "done"}).encode(), "application/json")
    assert status == 200 and done["transfer_status"] == "done"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, mine = gateway.json("GET", "/v1/documents/sent", A)
        entry = next(e for e in mine if e["message_id"] == sent["message_id"])
        if {r["kind"] for r in entry["receipts"]} >= {"accepted", "delivered"}:
            break
        time.sleep(0.5)
    assert {r["kind"] for r in entry["receipts"]} >= {"accepted", "delivered"}
    assert entry["to"] == [B]


def test_gateway_refusals(relay: Relay, gateway: Gateway) -> None:
    """No token: 401; another agency's document: 403 SENDER_NOT_ALLOWED; malformed XML: 422 with its
    code; a bad transfer status: 400; every error is JSON with a code and a sentence."""
    doc = relay.document(A, [B])
    status, err = gateway.json("POST", "/v1/documents", None, doc)
    assert (status, err["code"]) == (401, "UNAUTHORIZED")
    status, err = gateway.json("POST", "/v1/documents", OTHER, doc)
    assert (status, err["code"]) == (403, "SENDER_NOT_ALLOWED") and err["message"]
    status, err = gateway.json("POST", "/v1/documents", A, b"1212<?xml version='1.0'?><edXML/>")
    assert (status, err["code"]) == (422, "XML_MALFORMED")
    status, err = gateway.json("PUT", "/v1/documents/received/x/transfer-status", A, b'{"status": "lost"}',
                               "application/json")
    assert (status, err["code"]) == (400, "USAGE")
    status, agencies = gateway.json("GET", "/v1/agencies", A)
    assert status == 200 and {a["organ_id"] for a in agencies} == set(relay.topology.agencies)
    status, _ = gateway.call("GET", "/metrics", None)  # not on the gateway's port: --metrics-port, loopback
    assert status == 404
    from prometheus_client import generate_latest
    assert b'lienthong_gateway_requests_total{route="/v1/documents",status="403"}' in generate_latest()


def test_gateway_size_limit(relay: Relay) -> None:
    """A document over the gateway's limit is refused with 413 XML_TOO_LARGE before it is read whole."""
    g = Gateway(relay, max_bytes=20_000)
    try:
        status, err = g.json("POST", "/v1/documents", A, relay.document(A, [B], size=40_000))
        assert (status, err["code"]) == (413, "XML_TOO_LARGE")
    finally:
        g.stop()


def test_openapi_published_and_current(relay: Relay) -> None:
    """docs/openapi.json is the gateway's own description (regenerate: lienthong gateway openapi)."""
    published = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert published == create_app(relay.settings, connect=relay.client).openapi()
    assert "/v1/documents/received/{message_id}/transfer-status" in published["paths"]


def test_non_python_client_through_the_wire_contract(relay: Relay, tmp_path: Path) -> None:
    """A C client on librabbitmq (tests/amqp_client.c: TLS, client certificate, SASL EXTERNAL) sends
    and receives by docs/wire.md alone: publish to in.<code> with the agency's account, consume
    from inbox.<code>."""
    if shutil.which("gcc") is None or not Path("/usr/include/amqp_ssl_socket.h").exists():
        if os.environ.get("CI"):
            pytest.fail("gcc or librabbitmq-dev is not installed (scripts/bootstrap.sh installs them)")
        pytest.skip("gcc or librabbitmq-dev is not installed")
    client = tmp_path / "amqp_client"
    subprocess.run(["gcc", "-O1", "-o", str(client), str(ROOT / "tests" / "amqp_client.c"), "-lrabbitmq"],
                   check=True, timeout=60)

    def run(mode: str, agency: str, target: str, data: bytes = b"") -> bytes:
        key, cert = relay.settings.keys.agency_account(agency)
        node = relay.topology.hubs[relay.topology.agency(agency).hub].amqp_url.split()[0]
        host, port = node.split("//")[1].split("/")[0].rsplit(":", 1)
        host = "localhost" if host == "127.0.0.1" else host  # librabbitmq checks DNS names, not IP SANs
        done = subprocess.run([str(client), mode, host, port, relay.names.vhost(relay.topology.agency(agency).hub),
                               str(relay.settings.keys.broker_ca), str(cert), str(key), target,
                               relay.names.agency_user(agency)],
                              input=data, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    doc = relay.document(A, [B], subject="C client")
    run("publish", A, wire.agency_exchange(A), doc)
    assert run("consume", B, wire.inbox_queue(B)) == doc


def test_sdk_follows_receipts(relay: Relay) -> None:
    """The SDK sends, then follows its document: 'accepted' and 'delivered' arrive verified, and an
    unrelated document waiting in the same inbox is left there untouched."""
    c_sender = relay.client(A)
    other = relay.document(B, [A], subject="để nguyên")  # a document for A, waiting in A's inbox
    relay.client(B).send(other)
    time.sleep(1)
    message_id = c_sender.send(relay.document(A, [B], subject="theo dõi"))
    got = c_sender.follow(message_id)
    assert set(got) == {"accepted", "delivered"}
    assert got["delivered"].recipients == (B,)
    assert [i.body for i in relay.take(A, 1, accept=lambda i: i.body == other)] == [other]




def test_folder_drop_restart_mid_batch(relay: Relay, tmp_path: Path) -> None:
    """12 unsigned files dropped; the adapter signs and sends them and is killed after the 5th send;
    restarted, it finishes: each document reaches the recipient exactly once, a malformed file lands in
    failed/ with its reason, and the recipient's adapter writes what it receives into inbox/."""
    root = tmp_path / "sender"
    (root / "outbox").mkdir(parents=True)
    key_dir = relay.settings.pki / "agencies" / A
    docs = {}
    for i in range(12):
        data = build_document(Organ(A, "UBND xã"), [Organ(B)], subject=f"thư mục {i}", document_id=f"folder-{i}")
        docs[f"folder-{i}"] = data
        (root / "outbox" / f"doc{i:02d}.edxml").write_bytes(data)
    (root / "outbox" / "broken.edxml").write_bytes(b"1212<?xml version='1.0'?>")
    args = ("folder", "run", A, "--root", str(root), "--key", str(key_dir / "key.pem"),
            "--cert", str(key_dir / "cert.pem"), "--once")
    killed = relay.cli(*args, env={"LIENTHONG_FAULT": "folder-after-send:5"})
    assert killed.returncode == 137, killed.stderr
    assert len(list((root / "sent").glob("*.edxml"))) == 4  # the 5th was sent, not yet moved
    done = relay.cli(*args)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "sent").glob("*.edxml")) == [f"doc{i:02d}.edxml" for i in range(12)]
    assert (root / "failed" / "broken.edxml.reason.txt").read_text().startswith("XML_MALFORMED: ")
    assert list((root / "work").iterdir()) == []
    inbox = tmp_path / "recipient"
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < 12 and time.monotonic() < deadline:  # rounds until all arrived (or time is up)
        assert relay.cli("folder", "run", B, "--root", str(inbox), "--once").returncode == 0
        got = [p.read_bytes() for p in (inbox / "inbox").glob("*.edxml")]
    from broker.core.edxml import read
    from broker.core.parsing import parse
    ids = sorted(i for i in (read(parse(b)).document_id for b in got) if i.startswith("folder-"))
    assert ids == sorted(docs)  # each once: no twin from the resend after the kill


def test_handed_once(tmp_path: Path) -> None:
    """The inbox reader records a message id once (the adapters' handed-over store)."""
    store = HandedOver(tmp_path / "handed.sqlite3")
    agency, mid = f"a-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    assert not store.seen(agency, mid)
    assert store.mark(agency, mid) is True
    assert store.mark(agency, mid) is False
    assert store.seen(agency, mid)


def test_a_crafted_message_id_names_no_file_and_hides_no_message(relay: Relay, tmp_path: Path) -> None:
    """Someone who can write into B's inbox (a hub on the path) puts a document B already has there
    again, once with the AMQP message_id "../../escaped-..." and once with the message id of a
    document B has not received yet.  The SDK knows messages by the SHA-256 of their bytes: both
    copies are twins of the first and dropped, no file is written outside the inbox folder (the
    crafted id used to name the file), and the later document is handed over when it comes (the
    crafted id used to mark it as handed over already)."""
    from broker.relay import layout
    from broker.relay.amqp import blocking

    first, later = relay.document(A, [B], subject="đã nhận"), relay.document(A, [B], subject="sẽ đến")
    relay.client(A).send(first)
    deadline = time.monotonic() + 60
    genuine = []
    while not genuine and time.monotonic() < deadline:
        genuine = [i for i in relay.client(B).peek(limit=500) if i.body == first]
        time.sleep(0.3)
    assert genuine, "the first document did not reach B's inbox"
    hub = relay.topology.agency(B).hub
    escape = f"../../escaped-{relay.namespace}"
    publisher = blocking.Publisher(layout.account_url(relay.topology, hub, relay.settings.keys.hub_account(hub, "hub"),
                                                       relay.settings.keys.broker_ca))
    for crafted in (escape, wire.message_id(later)):
        publisher.publish(wire.EX_INBOX, B, first, message_id=crafted, user_id=relay.names.hub_user(hub),
                          headers=genuine[0].headers)
    publisher.close()
    inbox = tmp_path / "dms" / "inbox"
    took = relay.cli("inbox", B, "--fetch", str(inbox))
    assert took.returncode == 0, took.stderr
    assert (inbox / f"{wire.message_id(first)[:32]}.edxml").read_bytes() == first
    assert [p for p in tmp_path.rglob("escaped-*")] == [] and not (inbox / f"{escape}.edxml").resolve().exists()
    relay.client(A).send(later)
    deadline = time.monotonic() + 60
    while not (inbox / f"{wire.message_id(later)[:32]}.edxml").exists() and time.monotonic() < deadline:
        assert relay.cli("inbox", B, "--fetch", str(inbox), "--wait", "1").returncode == 0
    assert (inbox / f"{wire.message_id(later)[:32]}.edxml").read_bytes() == later
    assert sorted(p.name for p in inbox.iterdir() if p.read_bytes() in (first, later)) == sorted(
        f"{wire.message_id(d)[:32]}.edxml" for d in (first, later))
