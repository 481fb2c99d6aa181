"""Hostile input over every way in (raw AMQP, REST gateway, folder drop) against one real relay.

Each case is refused with its specific code (docs/errors.md); where the sender can be told, it gets a
rejection receipt signed by a hub (verified here against the relay's trust store) carrying that code;
the refused bytes are parked at the entry hub with header ``lt-code`` = that code, and nothing reaches
the recipient.  Harmless variants (a comment, forged informative headers) are delivered exactly once.
At the end no hub worker has died or logged a traceback, and a good document still goes through each
way in exactly once.

The cases are in tests/hostile.py.  Each way in sends its whole batch first and then collects the
answers, so the module runs in well under a minute when the relay behaves.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pytest

from adapters.folder import FolderAdapter
from adapters.gateway import create_app, issue_token
from broker.core import errors, receipts, wire
from broker.core.edxml import EDXML_NS, read
from broker.core.parsing import parse
from broker.core.trust import TrustStore
from broker.relay import devpki, layout
from broker.relay.amqp import blocking, params
from broker.relay.transport import Received
from tests import hostile as h
from tests.hostile import (
    AMQP_SENDER,
    BYSTANDER,
    FOLDER_SENDER,
    FOLDER_SIGNER,
    MAX_BYTES,
    RECIPIENT,
    REST_SENDER,
    UNKNOWN,
    Case,
    Kit,
)
from tests.relay import Relay, serve

pytestmark = pytest.mark.broker

HUB = {AMQP_SENDER: "national", REST_SENDER: "H14", FOLDER_SENDER: "H14", FOLDER_SIGNER: "H14-D31"}


def _revoke_bystander(r: Relay) -> None:
    devpki.revoke(r.settings.pki, [r.settings.pki / "agencies" / BYSTANDER / "cert.pem"])


RELAY = {"settings": {"max_bytes": MAX_BYTES, "max_depth": 64}, "before_start": _revoke_bystander}
"""A small size limit, and G17's certificate revoked before the hubs start (they load the CRL at start)."""


@pytest.fixture(scope="module")
def kit(relay: Relay) -> Kit:
    return Kit(relay)


# --- what comes back: parked copies, receipts, deliveries ---------------------------------------


@dataclass(frozen=True)
class ParkedCopy:
    hub: str      # the hub whose parking queue held it
    code: str     # its lt-code header
    lt_hub: str   # its lt-hub header


@dataclass(frozen=True)
class Told:
    agency: str   # whose inbox it reached
    kind: str
    code: str     # "UNVERIFIED: ..." when the hub signature does not verify
    hub: str = ""
    time: str = ""


@dataclass
class Observer:
    """Drains, with the hubs' own accounts, the parking queues of ``parking_hubs`` and the raw inboxes
    of ``inboxes`` (no client-side deduplication: a second copy would be counted)."""

    relay: Relay
    parking_hubs: tuple[str, ...]
    inboxes: tuple[str, ...]
    parked: dict[str, list[ParkedCopy]] = field(default_factory=lambda: defaultdict(list))
    told: dict[str, list[Told]] = field(default_factory=lambda: defaultdict(list))
    delivered: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def __post_init__(self) -> None:
        self.trust = TrustStore.load(self.relay.settings.pki)
        tiers = [wire.retry_queue(t) for t, _ in layout.retry_tiers(self.relay.topology)]
        self._busy_queues = [wire.Q_INGRESS, *tiers]
        self._seen: set[str] = set()

    def poll(self) -> int:
        """One pass over the queues.  A message the broker hands out again (``redelivered``: our
        own ack was lost) is not counted twice; a second copy published by a hub would be."""
        new = 0
        for hub in self.parking_hubs:
            def park(r: Received, hub: str = hub) -> bool:
                if r.redelivered and _sha(r.body) in self.parked:
                    return True
                self.parked[_sha(r.body)].append(
                    ParkedCopy(hub, str(r.headers.get("lt-code")), str(r.headers.get("lt-hub"))))
                return True
            new += blocking.fetch(self.relay.hub_url(hub), wire.Q_PARKING, park, limit=1000)
        for agency in self.inboxes:
            def take(r: Received, agency: str = agency) -> bool:
                if r.redelivered and _sha(r.body) in self._seen:
                    return True
                self._seen.add(_sha(r.body))
                if r.headers.get("lt-kind") == "receipt":
                    try:
                        got = receipts.verify(r.body, self.trust).receipt
                        self.told[got.document_sha256].append(Told(agency, got.kind, got.code, got.hub, got.time))
                    except errors.LienthongError as exc:
                        about = receipts.read_bytes(r.body).document_sha256
                        self.told[about].append(Told(agency, "?", f"UNVERIFIED: {exc.line()}"))
                else:
                    self.delivered[agency][_sha(r.body)] += 1
                return True
            new += blocking.fetch(self.relay.hub_url(self.relay.topology.agency(agency).hub),
                                   wire.inbox_queue(agency), take, limit=1000)
        return new

    def idle(self) -> bool:
        return all(sum(blocking.depths(self.relay.hub_url(hub), self._busy_queues).values()) == 0
                   for hub in self.relay.topology.hubs)

    def wait(self, done: Callable[[], bool], *, timeout: float = 60.0, quiet: float = 3.0) -> None:
        """Poll until ``done()``; give up at ``timeout``, or once the relay is idle and nothing new
        arrived for ``quiet`` seconds (what is missing then will not come)."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while True:
            if self.poll():
                last = time.monotonic()
            if done():
                return
            now = time.monotonic()
            if now > deadline or (now - last > quiet and self.idle()):
                return
            time.sleep(0.2)

    def settle(self, quiet: float = 1.5) -> None:
        """Keep collecting until the relay is idle and nothing arrived for ``quiet`` seconds: a
        second copy, had there been one, is counted by then."""
        self.wait(lambda: False, timeout=30.0, quiet=quiet)

    def rejections(self, digest: str, agency: str) -> list[str]:
        return [t.code for t in self.told.get(digest, []) if t.agency == agency and t.kind != "accepted"
                and t.kind != "delivered"]

    def kinds(self, digest: str, agency: str) -> list[str]:
        return sorted(t.kind for t in self.told.get(digest, []) if t.agency == agency)

    def told_to(self, digest: str, agency: str) -> list[str]:
        """Every receipt about these bytes in ``agency``'s inbox: ``accepted``, ``delivered``,
        ``rejected CODE``."""
        return sorted(f"{t.kind} {t.code}".strip() for t in self.told.get(digest, []) if t.agency == agency)

    def parked_at(self, digest: str, hub: str | None = None) -> list[tuple[str, str, str]]:
        """Parked copies of these bytes (at ``hub`` only, if given)."""
        return [(p.hub, p.code, p.lt_hub) for p in self.parked.get(digest, []) if hub in (None, p.hub)]


@pytest.fixture(scope="module")
def obs(relay: Relay) -> Observer:
    return Observer(relay, ("national", "H14"), (AMQP_SENDER, BYSTANDER, RECIPIENT))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _account_url(relay: Relay, agency: str, hub: str | None = None) -> str:
    return relay.agency_url(agency, hub)


def publish_raw(relay: Relay, agency: str, body: bytes, headers: Mapping[str, Any] | None = None) -> None:
    """As any AMQP client does it (docs/wire.md): the agency's own account, its entry exchange,
    persistent, publisher confirms; no user_id."""
    blocking.publish(_account_url(relay, agency), wire.agency_exchange(agency), "", body,
                      message_id=_sha(body), user_id=None, headers=dict(headers or {}))


def refused(hub: str, code: str, told: bool) -> dict[str, object]:
    """What a refused case must leave behind."""
    return {"parked": [(hub, code, hub)], "told": [f"rejected {code}"] if told else [], "delivered": 0,
            "bystander": 0}


def accepted() -> dict[str, object]:
    return {"parked": [], "told": ["accepted", "delivered"], "delivered": 1, "bystander": 0}


def seen(o: Observer, digest: str, agency: str) -> dict[str, object]:
    return {"parked": o.parked_at(digest), "told": o.told_to(digest, agency),
            "delivered": o.delivered[RECIPIENT][digest], "bystander": o.delivered[BYSTANDER][digest]}


# --- 1. raw AMQP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amqp(relay: Relay, kit: Kit, obs: Observer) -> dict[str, Case]:
    """Every case published raw to G22's entry exchange, then the answers collected."""
    cases = h.amqp_cases(kit)
    assert len({c.digest for c in cases}) == len(cases), "two cases share their bytes"
    for c in cases:
        publish_raw(relay, AMQP_SENDER, c.body, c.headers)

    def done() -> bool:
        for c in cases:
            if c.code is None:
                if not obs.delivered[RECIPIENT][c.digest] or len(obs.kinds(c.digest, AMQP_SENDER)) < 2:
                    return False
            elif not obs.parked[c.digest] or (c.told and not obs.rejections(c.digest, AMQP_SENDER)):
                return False
        return True

    obs.wait(done)
    obs.settle()
    return {c.name: c for c in cases}


@pytest.mark.parametrize("name", h.AMQP_NAMES)
def test_amqp(name: str, amqp: dict[str, Case], obs: Observer) -> None:
    """Refused: parked once at the entry hub with its code, the sender told by a hub-signed rejection
    with that code, nothing delivered.  Harmless: delivered once, accepted and delivered receipts."""
    c = amqp[name]
    want = accepted() if c.code is None else refused("national", c.code, c.told)
    assert seen(obs, c.digest, AMQP_SENDER) == want


ACCESS = ["another-agency-exchange", "hub-ingress-exchange", "inbox-exchange", "parking-exchange",
          "link-exchange", "another-hub-vhost", "forged-user-id"]


@pytest.fixture(scope="module")
def access(relay: Relay, kit: Kit, obs: Observer) -> dict[str, tuple[str, str]]:
    """Writes G22's account may not make: name -> (digest, what the broker answered)."""
    url = _account_url(relay, AMQP_SENDER)
    targets = {"another-agency-exchange": (url, wire.agency_exchange(BYSTANDER), ""),
               "hub-ingress-exchange": (url, wire.EX_INGRESS, ""),
               "inbox-exchange": (url, wire.EX_INBOX, BYSTANDER),
               "parking-exchange": (url, wire.EX_PARKING, ""),
               "link-exchange": (url, wire.link_exchange("H41"), ""),
               "another-hub-vhost": (_account_url(relay, AMQP_SENDER, "H41"), wire.agency_exchange(AMQP_SENDER), "")}
    out: dict[str, tuple[str, str]] = {}
    for name in ACCESS:
        body = kit.signed(AMQP_SENDER, subject=f"{h.SUBJECT} {name}")
        if name == "forged-user-id":  # a raw client setting user_id to the hub's account
            out[name] = (_sha(body), _forged_user_id(url, wire.agency_exchange(AMQP_SENDER), body,
                                                     relay.names.hub_user("national")))
            continue
        target_url, exchange, key = targets[name]
        try:
            blocking.publish(target_url, exchange, key, body, message_id=_sha(body), user_id=None)
            out[name] = (_sha(body), "published")
        except errors.LienthongError as exc:
            out[name] = (_sha(body), exc.code)
    obs.settle()
    return out


def _forged_user_id(url: str, exchange: str, body: bytes, user_id: str) -> str:
    conn = pika.BlockingConnection(params.parameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, "", body, pika.BasicProperties(delivery_mode=2, user_id=user_id))
        return "published"
    except pika.exceptions.ChannelClosedByBroker as exc:
        return f"{exc.reply_code} {exc.reply_text}"
    finally:
        if conn.is_open:
            conn.close()


@pytest.mark.parametrize("name", ACCESS)
def test_amqp_broker_refuses(name: str, access: dict[str, tuple[str, str]], obs: Observer) -> None:
    """The broker itself refuses these writes (ACCESS_REFUSED; a forged user_id: 406
    PRECONDITION_FAILED naming user_id); nothing reaches a hub, let alone the recipient."""
    digest, answer = access[name]
    if name == "forged-user-id":
        assert answer.startswith("406 PRECONDITION_FAILED") and "user_id" in answer
    else:
        assert answer == "ACCESS_REFUSED"
    assert (obs.parked_at(digest), obs.delivered[RECIPIENT][digest]) == ([], 0)


@pytest.mark.parametrize("path", ["raw", "sdk"])
def test_amqp_replay_is_delivered_once(path: str, relay: Relay, kit: Kit, obs: Observer) -> None:
    """The same signed bytes sent again: delivered once (counted raw in the inbox), one accepted and
    one delivered receipt, and the entry hub logs every other copy as a duplicate.

    ``raw``: one document, three copies, each on a new connection.  ``sdk``: 80 documents, each
    sent twice on the SDK's kept-open connection, the second copy 0 to 10 ms after the first: a
    sweep over the moment the hub finishes the first copy (publish confirmed, claims not yet
    marked), where a copy must still be a duplicate."""
    n_docs, copies = (1, 3) if path == "raw" else (80, 2)
    docs = [kit.signed(AMQP_SENDER, subject=f"{h.SUBJECT} gửi lại {path} {i}") for i in range(n_docs)]
    client = relay.client(AMQP_SENDER)
    for i, doc in enumerate(docs):
        if path == "raw":
            for _ in range(copies):
                publish_raw(relay, AMQP_SENDER, doc)
            continue
        client.send(doc)
        time.sleep((i % 40) * 0.00025)
        client.send(doc)
        time.sleep(0.02)
    digests = [_sha(doc) for doc in docs]
    obs.wait(lambda: all(obs.delivered[RECIPIENT][d] and len(obs.kinds(d, AMQP_SENDER)) >= 2 for d in digests))
    obs.settle()
    events = _log_events(relay)
    got: dict[str, tuple[object, ...]] = {}
    want: dict[str, tuple[object, ...]] = {}
    for doc, d in zip(docs, digests, strict=True):
        document_id = read(parse(doc)).document_id
        duplicates = [e.get("hub") for e in events
                      if e.get("event") == "duplicate suppressed" and e.get("document_id") == document_id]
        got[document_id] = (obs.delivered[RECIPIENT][d], obs.told_to(d, AMQP_SENDER), obs.parked_at(d), duplicates)
        want[document_id] = (1, ["accepted", "delivered"], [], ["national"] * (copies - 1))
    assert got == want


def test_amqp_forged_replay_header_does_not_repeat_a_rejection(relay: Relay, kit: Kit, obs: Observer) -> None:
    """``lt-replay`` belongs to ``lienthong dlq replay`` (published by the hub's own account to the
    ingress).  Set by an agency on a copy of bytes already refused, it must change nothing: the
    copy is a duplicate, not a second parked message and a second signed rejection."""
    doc = kit.signed(AMQP_SENDER, to=(UNKNOWN,), subject=f"{h.SUBJECT} phát lại giả")
    d = _sha(doc)
    publish_raw(relay, AMQP_SENDER, doc)
    obs.wait(lambda: bool(obs.parked[d]) and bool(obs.rejections(d, AMQP_SENDER)))
    for headers in ({"lt-replay": "forged-1"}, {}, {"lt-replay": "forged-2"}):
        publish_raw(relay, AMQP_SENDER, doc, headers)
    obs.settle(2.0)
    assert (obs.parked_at(d), obs.told_to(d, AMQP_SENDER)) == \
        ([("national", "RECIPIENT_UNKNOWN", "national")], ["rejected RECIPIENT_UNKNOWN"])


def test_amqp_spoof_first_does_not_block_the_genuine_sender(relay: Relay, kit: Kit, obs: Observer) -> None:
    """G17's account hands in a document G22 signed but has not sent yet: refused
    (SENDER_NOT_ALLOWED, told to G17, parked).  G22 then sends its own document: it must be
    accepted and delivered; another account's refused attempt is no verdict on G22's submission."""
    doc = kit.signed(AMQP_SENDER, subject=f"{h.SUBJECT} bị chặn trước")
    d = _sha(doc)
    publish_raw(relay, BYSTANDER, doc)
    obs.wait(lambda: bool(obs.parked[d]) and bool(obs.rejections(d, BYSTANDER)))
    assert (obs.parked_at(d), obs.told_to(d, BYSTANDER)) == \
        ([("national", "SENDER_NOT_ALLOWED", "national")], ["rejected SENDER_NOT_ALLOWED"])
    publish_raw(relay, AMQP_SENDER, doc)
    obs.wait(lambda: bool(obs.delivered[RECIPIENT][d]) and len(obs.kinds(d, AMQP_SENDER)) >= 2, timeout=20)
    obs.settle()
    assert (obs.delivered[RECIPIENT][d], obs.told_to(d, AMQP_SENDER)) == (1, ["accepted", "delivered"])


# --- 2. REST gateway ------------------------------------------------------------------------------


class Gateway:
    def __init__(self, relay: Relay) -> None:
        self.port, self.server = serve(create_app(relay.settings, connect=relay.client))
        self.token = issue_token(relay.settings, REST_SENDER)

    def auth(self) -> bytes:
        return b"Authorization: Bearer " + self.token.encode() + b"\r\n"

    def http(self, method: str, path: str, *, head: bytes | None = None, body: bytes | None = None,
             framing: str = "length") -> tuple[int, bytes]:
        """One request over a raw socket (so headers can be as broken as an attacker likes).
        ``head``: raw header lines, default this agency's token; ``framing``: ``length``,
        ``chunked``, or ``declared-huge`` (a Content-Length far over the limit, a short body).
        A body goes out after the server's ``100 Continue`` (as curl does for large bodies), so a
        request refused on its headers alone is answered before any body is sent."""
        lines = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
        lines += self.auth() if head is None else head
        payload = b""
        if body:
            lines += b"Content-Type: application/xml\r\nExpect: 100-continue\r\n"
            if framing == "chunked":
                lines += b"Transfer-Encoding: chunked\r\n"
                step = 65536
                payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                                   for i in range(0, len(body), step)) + b"0\r\n\r\n"
            else:
                declared = 10 ** 9 if framing == "declared-huge" else len(body)
                lines += b"Content-Length: %d\r\n" % declared
                payload = body
        elif body is not None:
            lines += b"Content-Type: application/xml\r\nContent-Length: 0\r\n"
        got: list[bytes] = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            reader = threading.Thread(target=_read_all, args=(s, got), daemon=True)
            reader.start()
            s.sendall(lines + b"\r\n")
            if payload:
                deadline = time.monotonic() + 10
                while not got and reader.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.002)
                if got and got[0].startswith(b"HTTP/1.1 100"):
                    try:
                        s.sendall(payload)
                    except OSError:
                        pass  # answered and closed before the whole body was taken (over the limit)
            reader.join(60)
        raw = b"".join(got)
        if raw.startswith(b"HTTP/1.1 100"):
            raw = raw.partition(b"\r\n\r\n")[2]
        head_part, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head_part.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head_part.lower():
            rest = _dechunk(rest)
        return status, rest

    def json(self, method: str, path: str) -> Any:
        status, body = self.http(method, path)
        assert status == 200, body
        return json.loads(body)


def _read_all(s: socket.socket, into: list[bytes]) -> None:
    """Read until the server closes; a reset after its answer (it closed with our body unread) ends it too."""
    try:
        while chunk := s.recv(65536):
            into.append(chunk)
    except OSError:
        pass


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


@pytest.fixture(scope="module")
def gateway(relay: Relay) -> Iterator[Gateway]:
    g = Gateway(relay)
    yield g
    g.server.should_exit = True


@dataclass(frozen=True)
class RestCase:
    name: str
    status: int          # HTTP status of the POST
    code: str | None     # the code in the JSON error, or (202) in the hub's signed rejection; None: HTTP layer
    body: bytes
    head: bytes | None = None
    framing: str = "length"

    @property
    def at_hub(self) -> bool:
        return self.status == 202


REST_STATUS = {"XML_TOO_LARGE": 413, "SENDER_NOT_ALLOWED": 403, "UNAUTHORIZED": 401}
# refused by the gateway itself: it parses, reads the edXML model and matches From to the token
REST_LOCAL_PARSE = ["truncated", "binary-garbage", "empty-body", "bad-encoding", "nul-byte", "trailing-garbage",
                    "not-edxml-root", "wrong-namespace", "billion-laughs", "external-entity", "parameter-entity",
                    "external-dtd", "doctype-alone", "xinclude", "too-deep", "too-deep-in-edxml", "oversize"]
REST_LOCAL_SIGNATURE = ["manifest-mismatch", "same-recipient-twice", "spoofed-sender"]
REST_HEADERS = ["no-token", "forged-token", "basic-auth", "second-authorization", "joined-authorization",
                "folded-authorization", "forged-x-agency", "lf-injected-header", "cr-injected-header",
                "nul-in-header", "declared-oversize", "chunked-oversize", "json-body"]
REST_NAMES = ([f"parse-{n}" for n, _, _ in h.PARSE] + [f"sig-{n}" for n, _, _ in h.SIGNATURE]
              + [f"hdr-{n}" for n in REST_HEADERS])


def _rest_cases(kit: Kit, gw: Gateway) -> list[RestCase]:
    out = []
    for name, code, pbuild in h.PARSE:
        status = REST_STATUS.get(code, 422) if name in REST_LOCAL_PARSE else 202
        out.append(RestCase(f"parse-{name}", status, code, pbuild(kit, REST_SENDER, "rest")))
    for name, code, sbuild in h.SIGNATURE:
        status = REST_STATUS.get(code, 422) if name in REST_LOCAL_SIGNATURE else 202
        out.append(RestCase(f"sig-{name}", status, code, sbuild(kit, REST_SENDER)))
    mine, token = kit.signed(REST_SENDER, subject=f"{h.SUBJECT} hdr"), gw.token.encode()
    theirs = kit.signed(RECIPIENT, to=(REST_SENDER,), subject=f"{h.SUBJECT} của người khác")
    forged = b"Authorization: Bearer forged-" + b"a" * 40 + b"\r\n"
    out += [
        RestCase("hdr-no-token", 401, "UNAUTHORIZED", mine, head=b""),
        RestCase("hdr-forged-token", 401, "UNAUTHORIZED", mine, head=forged),
        RestCase("hdr-basic-auth", 401, "UNAUTHORIZED", mine, head=b"Authorization: Basic " + token + b"\r\n"),
        # a bad credential first and a good one after: the gateway must not go looking for one that works
        RestCase("hdr-second-authorization", 401, "UNAUTHORIZED", mine, head=forged + gw.auth()),
        RestCase("hdr-joined-authorization", 401, "UNAUTHORIZED", mine,
                 head=b"Authorization: Bearer forged, Bearer " + token + b"\r\n"),
        RestCase("hdr-folded-authorization", 401, "UNAUTHORIZED", mine,
                 head=b"Authorization: Bearer forged\r\n " + token + b"\r\n"),
        # who sends is the token's agency, whatever the headers say
        RestCase("hdr-forged-x-agency", 403, "SENDER_NOT_ALLOWED", theirs,
                 head=gw.auth() + f"X-Agency: {RECIPIENT}\r\nX-Organ-Id: {RECIPIENT}\r\n"
                                  f"X-Forwarded-User: {RECIPIENT}\r\n".encode()),
        RestCase("hdr-lf-injected-header", 403, "SENDER_NOT_ALLOWED",
                 kit.signed(RECIPIENT, to=(REST_SENDER,), subject=f"{h.SUBJECT} LF"),
                 head=b"Authorization: Bearer " + token + b"\nX-Agency: " + RECIPIENT.encode() + b"\r\n"),
        # a bare CR or a NUL inside a header value: refused by the HTTP layer before the gateway (400)
        RestCase("hdr-cr-injected-header", 400, None,
                 kit.signed(RECIPIENT, to=(REST_SENDER,), subject=f"{h.SUBJECT} CR"),
                 head=b"Authorization: Bearer " + token + b"\rX-Agency: " + RECIPIENT.encode() + b"\r\n"),
        RestCase("hdr-nul-in-header", 400, None, kit.signed(REST_SENDER, subject=f"{h.SUBJECT} NUL"),
                 head=b"Authorization: Bearer " + token + b"\x00\r\n"),
        RestCase("hdr-declared-oversize", 413, "XML_TOO_LARGE", kit.signed(REST_SENDER, subject=f"{h.SUBJECT} CL"),
                 framing="declared-huge"),
        RestCase("hdr-chunked-oversize", 413, "XML_TOO_LARGE", h.oversize(kit.signed(REST_SENDER)),
                 framing="chunked"),
        RestCase("hdr-json-body", 422, "XML_MALFORMED", b'{"document": "<edXML/>", "from": "' +
                 REST_SENDER.encode() + b'"}'),
    ]
    assert [c.name for c in out] == REST_NAMES
    return out


@dataclass(frozen=True)
class RestSeen:
    status: int
    answer: Any                        # the JSON of the POST, or its raw bytes
    sent_listing: list[str] = field(default_factory=list)  # receipt kinds shown by GET /v1/documents/sent
    receipts: list[str] = field(default_factory=list)      # codes of the verified rejections read back


@pytest.fixture(scope="module")
def rest(relay: Relay, kit: Kit, gateway: Gateway, obs: Observer) -> dict[str, tuple[RestCase, RestSeen]]:
    cases = _rest_cases(kit, gateway)
    posted: dict[str, tuple[int, Any]] = {}
    for c in cases:
        status, raw = gateway.http("POST", "/v1/documents", head=c.head, body=c.body, framing=c.framing)
        try:
            posted[c.name] = (status, json.loads(raw))
        except ValueError:
            posted[c.name] = (status, raw)
    at_hub = {_sha(c.body) for c in cases if c.at_hub}
    listing: dict[str, list[str]] = {}

    def done() -> bool:
        for entry in gateway.json("GET", "/v1/documents/sent"):  # pulls the agency's inbox
            listing[entry["message_id"]] = [r["kind"] for r in entry["receipts"]]
        return all(listing.get(d) and obs.parked[d] for d in at_hub)

    obs.wait(done)
    obs.settle()
    done()
    # every rejection the gateway holds for this agency, each verified as signed by a hub we trust
    trust = TrustStore.load(relay.settings.pki)
    verified: dict[str, list[str]] = defaultdict(list)
    for item in gateway.json("GET", "/v1/documents/received?include_receipts=true"):
        if item["kind"] == "receipt" and str(item["status_code"]).startswith("rejected"):
            status, body = gateway.http("GET", f"/v1/documents/received/{item['message_id']}")
            assert status == 200
            r = receipts.verify(body, trust).receipt
            verified[r.document_sha256].append(r.code)
    return {c.name: (c, RestSeen(posted[c.name][0], posted[c.name][1], listing.get(_sha(c.body), []),
                                 verified.get(_sha(c.body), []))) for c in cases}


@pytest.mark.parametrize("name", REST_NAMES)
def test_rest(name: str, rest: dict[str, tuple[RestCase, RestSeen]], obs: Observer) -> None:
    """Refused by the gateway: its HTTP status and JSON ``{"code", "message"}``, nothing relayed.
    Refused by the hub: 202, then the signed rejection with its code, shown in /v1/documents/sent and
    read back verified; parked at H14; nothing delivered."""
    c, s = rest[name]
    d = _sha(c.body)
    got: dict[str, object] = {"status": s.status, "parked": obs.parked_at(d, "H14"),
                              "delivered": obs.delivered[RECIPIENT][d]}
    if c.at_hub:
        got.update(message_id=s.answer.get("message_id") if isinstance(s.answer, dict) else s.answer,
                   listing=s.sent_listing, receipts=s.receipts)
        assert got == {"status": 202, "parked": [("H14", c.code, "H14")], "delivered": 0, "message_id": d,
                       "listing": [f"rejected {c.code}"], "receipts": [c.code]}
    elif c.code is None:  # the HTTP server's own 400, before any lienthong code runs
        got.update(json=isinstance(s.answer, dict))
        assert got == {"status": 400, "parked": [], "delivered": 0, "json": False}
    else:
        answer = s.answer if isinstance(s.answer, dict) else {}
        got.update(code=answer.get("code"), has_message=bool(answer.get("message")), listed=s.sent_listing)
        assert got == {"status": c.status, "parked": [], "delivered": 0, "code": c.code, "has_message": True,
                       "listed": []}


# --- 3. folder drop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderCase:
    name: str
    code: str
    body: bytes
    signer: bool     # dropped in the folder that signs (FOLDER_SIGNER), else in the one that does not
    at_hub: bool     # refused by the hub (a rejection receipt), else by the adapter before sending

    @property
    def file(self) -> str:
        return f"{self.name}.edxml"


# refused by the adapter before sending: it parses every file (and checks or makes signatures)
FOLDER_LOCAL_PARSE = ["truncated", "binary-garbage", "empty-body", "bad-encoding", "nul-byte", "trailing-garbage",
                      "billion-laughs", "external-entity", "parameter-entity", "external-dtd", "doctype-alone",
                      "xinclude", "too-deep", "too-deep-in-edxml"]
FOLDER_SIGNER_CASES: list[tuple[str, str, bool, Callable[[Kit], bytes]]] = [
    ("signer-tampered-signed-file", "SIG_DIGEST", False, lambda k: h.tampered_subject(k.signed(FOLDER_SIGNER))),
    ("signer-two-signatures", "SIG_PROFILE", False, lambda k: h.two_signatures(k.signed(FOLDER_SIGNER))),
    ("signer-wrapping-object", "SIG_PROFILE", False, lambda k: h.wrapping_object(k.signed(FOLDER_SIGNER))),
    ("signer-doctype", "XML_FORBIDDEN", False,
     lambda k: h.changed(b := k.unsigned(FOLDER_SIGNER), b.replace(b"?>\n", b"?>\n<!DOCTYPE edXML>\n", 1), "dt")),
    ("signer-wrong-namespace", "EDXML_NAMESPACE", False,
     lambda k: k.unsigned(FOLDER_SIGNER).replace(EDXML_NS.encode(), b"urn:not-edxml")),
    # signed by the folder with its own key, then refused by the hub
    ("signer-foreign-from", "SIGNER_MISMATCH", True, lambda k: k.unsigned(RECIPIENT, to=(FOLDER_SIGNER,))),
    ("signer-unknown-recipient", "RECIPIENT_UNKNOWN", True, lambda k: k.unsigned(FOLDER_SIGNER, to=(UNKNOWN,))),
    ("signer-oversize", "XML_TOO_LARGE", True,
     lambda k: h.insert_in_subject(k.unsigned(FOLDER_SIGNER), b"x" * MAX_BYTES, "oversize")),
]
FOLDER_NAMES = ([f"parse-{n}" for n, _, _ in h.PARSE] + [f"sig-{n}" for n, _, _ in h.SIGNATURE]
                + [n for n, _, _, _ in FOLDER_SIGNER_CASES])


def _folder_cases(kit: Kit) -> list[FolderCase]:
    out = [FolderCase(f"parse-{n}", code, b(kit, FOLDER_SENDER, "folder"), False, n not in FOLDER_LOCAL_PARSE)
           for n, code, b in h.PARSE]
    out += [FolderCase(f"sig-{n}", code, b(kit, FOLDER_SENDER), False, True) for n, code, b in h.SIGNATURE]
    out += [FolderCase(n, code, b(kit), True, at_hub) for n, code, at_hub, b in FOLDER_SIGNER_CASES]
    assert [c.name for c in out] == FOLDER_NAMES
    return out


@dataclass
class Folders:
    raw: FolderAdapter
    signer: FolderAdapter

    def of(self, c: FolderCase) -> FolderAdapter:
        return self.signer if c.signer else self.raw

    def run_once(self) -> None:
        self.raw.run_once()
        self.signer.run_once()

    def sent_digest(self, c: FolderCase) -> str | None:
        """The SHA-256 of the bytes the adapter sent for this file (signed by it, for the signer)."""
        with sqlite3.connect(self.of(c).root / ".sent-index.sqlite3") as db:
            row = db.execute("SELECT digest FROM sent WHERE name = ?", (c.file,)).fetchone()
        return str(row[0]) if row else None


@pytest.fixture(scope="module")
def folders(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Folders:
    base = tmp_path_factory.mktemp("folders")
    return Folders(FolderAdapter(relay.client(FOLDER_SENDER), base / "raw", None),
                   FolderAdapter(relay.client(FOLDER_SIGNER), base / "signer", relay.key(FOLDER_SIGNER)))


@dataclass(frozen=True)
class FolderSeen:
    reason: str | None          # failed/<file>.reason.txt
    where: list[str]            # which of outbox, work, sent, failed hold the file
    digest: str | None          # what was sent, if anything
    receipts: list[str]         # codes of the verified rejections in receipts/ about it


@pytest.fixture(scope="module")
def folder(relay: Relay, kit: Kit, folders: Folders, obs: Observer) -> dict[str, tuple[FolderCase, FolderSeen]]:
    cases = _folder_cases(kit)
    for c in cases:
        (folders.of(c).dir("outbox") / c.file).write_bytes(c.body)

    def done() -> bool:
        folders.run_once()
        return all((folders.of(c).dir("failed") / f"{c.file}.reason.txt").exists() for c in cases)

    folders.run_once()
    obs.wait(done)
    obs.settle()
    trust = TrustStore.load(relay.settings.pki)
    told: dict[str, list[str]] = defaultdict(list)
    for adapter in (folders.raw, folders.signer):
        for f in sorted(adapter.dir("receipts").glob("*.xml")):
            r = receipts.verify(f.read_bytes(), trust).receipt
            if r.kind == "rejected":
                told[r.document_sha256].append(r.code)
    out = {}
    for c in cases:
        a = folders.of(c)
        reason = a.dir("failed") / f"{c.file}.reason.txt"
        digest = folders.sent_digest(c)
        out[c.name] = (c, FolderSeen(reason.read_text(encoding="utf-8") if reason.exists() else None,
                                     [d for d in ("outbox", "work", "sent", "failed") if (a.dir(d) / c.file).exists()],
                                     digest, told.get(digest or "", [])))
    return out


@pytest.fixture(scope="module")
def parked_by_cli(relay: Relay, folder: object) -> dict[str, list[tuple[str, str]]]:
    """``lienthong dlq list --json`` at H14-D31 (the signing folder's hub), as an operator reads it."""
    out = relay.cli("dlq", "list", "--hub", "H14-D31", "--json")
    assert out.returncode == 0, out.stderr
    got: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in json.loads(out.stdout):
        got[p["digest"]].append((p["hub"], p["code"]))
    return got


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_folder(name: str, folder: dict[str, tuple[FolderCase, FolderSeen]], obs: Observer,
                parked_by_cli: dict[str, list[tuple[str, str]]]) -> None:
    """The file ends in failed/ with ``<file>.reason.txt`` = "CODE: sentence".  Refused by the adapter:
    never sent.  Refused by the hub: sent, answered by a hub-signed rejection (saved in receipts/) with
    the code, parked at the hub with it, delivered to nobody."""
    c, s = folder[name]
    code, _, sentence = (s.reason or "").partition(": ")
    got: dict[str, object] = {"code": code, "sentence": bool(sentence.strip()), "where": s.where}
    want: dict[str, object] = {"code": c.code, "sentence": True, "where": ["failed"]}
    if c.at_hub:
        d = s.digest or ""
        hub = HUB[FOLDER_SIGNER if c.signer else FOLDER_SENDER]
        parked = parked_by_cli.get(d, []) if c.signer else [(p[0], p[1]) for p in obs.parked_at(d)]
        got.update(sent=bool(s.digest), receipts=s.receipts, parked=parked, delivered=obs.delivered[RECIPIENT][d])
        want.update(sent=True, receipts=[c.code], parked=[(hub, c.code)], delivered=0)
    else:
        # (the same bytes may have been parked elsewhere: an empty body is an empty body)
        got.update(sent=s.digest, parked=obs.parked_at(_sha(c.body), HUB[FOLDER_SENDER]))
        want.update(sent=None, parked=[])
    assert got == want


# --- afterwards ----------------------------------------------------------------------------------


def _log_events(relay: Relay) -> list[dict[str, Any]]:
    events = []
    for line in relay.log_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def test_no_worker_crashed(relay: Relay, amqp: object, access: object, rest: object, folder: object) -> None:
    """After every attack every hub worker still runs and no log holds a traceback."""
    assert {hub: [p.poll() for p in procs] for hub, procs in relay.procs.items()} == \
        {hub: [None] for hub in relay.topology.hubs}
    assert "Traceback" not in relay.log_text()


def test_no_hop_failed_on_hostile_input(relay: Relay, amqp: object, access: object, rest: object,
                                        folder: object) -> None:
    """No input made the hop raise an unexpected exception (``hop failed``: the worker survives it,
    but the message is requeued until the broker's delivery limit dead-letters it without a code)."""
    failures = sorted({str(e.get("error")) for e in _log_events(relay)
                       if e.get("event") in ("hop failed", "session failed")})
    assert failures == []


def test_good_documents_still_delivered_once(relay: Relay, kit: Kit, obs: Observer, gateway: Gateway,
                                             folders: Folders, amqp: object, access: object, rest: object,
                                             folder: object) -> None:
    """After all the attacks, a good document through each way in reaches the recipient exactly once."""
    by_amqp = kit.signed(AMQP_SENDER, subject=f"{h.SUBJECT} sau tấn công AMQP")
    publish_raw(relay, AMQP_SENDER, by_amqp)
    by_rest = kit.signed(REST_SENDER, subject=f"{h.SUBJECT} sau tấn công REST")
    status, _ = gateway.http("POST", "/v1/documents", body=by_rest)
    assert status == 202
    by_folder = kit.signed(FOLDER_SENDER, subject=f"{h.SUBJECT} sau tấn công thư mục")
    (folders.raw.dir("outbox") / "after.edxml").write_bytes(by_folder)
    (folders.signer.dir("outbox") / "after.edxml").write_bytes(kit.unsigned(FOLDER_SIGNER, subject="sau tấn công"))
    folders.run_once()
    signed_by_folder = folders.sent_digest(FolderCase("after", "", b"", True, False))
    digests = [_sha(by_amqp), _sha(by_rest), _sha(by_folder), signed_by_folder or "not sent"]
    obs.wait(lambda: all(obs.delivered[RECIPIENT][d] for d in digests))
    obs.settle()
    assert [obs.delivered[RECIPIENT][d] for d in digests] == [1, 1, 1, 1]
    relay.wait_idle()
