"""End to end on a real RabbitMQ: hubs as real processes, agencies through their own accounts."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.core import errors, receipts, wire
from broker.core.hoprecords import verify_trace
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.relay.assemble import hub_certificates
from broker.relay.provision import Management
from tests.relay import Relay

pytestmark = pytest.mark.broker

N_COMMUNE, N_COMMUNE_2, N_PROVINCE = "000.00.51.H41", "000.00.52.H41", "000.00.00.H41"  # Nghệ An, two-tier
C_COMMUNE, C_COMMUNE_2, C_PROVINCE = "001.00.31.H14", "002.00.31.H14", "000.00.00.H14"  # Cao Bằng, three-tier
VPCP = "000.00.00.G22"


def _only(items: list, what: str) -> object:
    assert len(items) == 1, f"expected exactly one {what}, got {len(items)}"
    return items[0]


def _trace_hubs(relay: Relay, item: object) -> list[str]:
    trust = TrustStore.load(relay.settings.pki)
    records = verify_trace(item.trace, hub_certificates(relay.settings.pki, relay.topology),
                           hashlib.sha256(item.body).hexdigest(), trust=trust)
    return [r.hub for r in records]


def test_same_hub_delivery(relay: Relay) -> None:
    """Two communes of one province: delivered by their hub alone, bytes unchanged."""
    doc = relay.document(N_COMMUNE, [N_COMMUNE_2])
    relay.client(N_COMMUNE).send(doc)
    item = _only(relay.take(N_COMMUNE_2, 1), "delivery")
    assert item.body == doc
    assert _trace_hubs(relay, item) == ["H41"]


def test_two_tier_to_three_tier_via_national(relay: Relay) -> None:
    """Commune of the two-tier province to a commune of the three-tier one: four hubs, each hop signed,
    and the recipient verifies the sender's signature on the unchanged bytes."""
    doc = relay.document(N_COMMUNE, [C_COMMUNE])
    relay.client(N_COMMUNE).send(doc)
    item = _only(relay.take(C_COMMUNE, 1), "delivery")
    assert item.body == doc
    assert _trace_hubs(relay, item) == ["H41", "national", "H14", "H14-D31"]
    checked = check(item.body, trust=TrustStore.load(relay.settings.pki), topology=relay.topology)
    assert checked.message.sender.organ_id == N_COMMUNE


def test_three_tier_to_two_tier(relay: Relay) -> None:
    """The reverse route climbs the district and province hubs first."""
    doc = relay.document(C_COMMUNE_2, [N_PROVINCE])
    relay.client(C_COMMUNE_2).send(doc)
    item = _only(relay.take(N_PROVINCE, 1), "delivery")
    assert _trace_hubs(relay, item) == ["H14-D31", "H14", "national", "H41"]


def test_fan_out(relay: Relay) -> None:
    """One document to five agencies in three subtrees: each inbox gets exactly one copy."""
    targets = [N_PROVINCE, N_COMMUNE, C_COMMUNE, C_PROVINCE, "000.00.00.G17"]
    doc = relay.document(VPCP, targets)
    relay.client(VPCP).send(doc)
    for organ in targets:
        item = _only(relay.take(organ, 1), f"copy for {organ}")
        assert item.body == doc
    relay.wait_idle()
    for organ in targets:
        assert relay.documents_waiting(organ) == [], f"{organ} got a second copy"


def _receipts_about(relay: Relay, agency: str, digest: str, count: int = 1, timeout: float = 30.0,
                    items: list | None = None) -> list[receipts.Receipt]:
    """Take receipts from ``agency``'s inbox about the bytes ``digest``, each hub-signature verified."""
    trust = TrustStore.load(relay.settings.pki)

    def about(item: object) -> bool:
        return item.kind == "receipt" and receipts.verify(item.body, trust).receipt.document_sha256 == digest

    return [receipts.verify(i.body, trust).receipt for i in relay.take(agency, count, timeout=timeout, accept=about)]


def _rejection(relay: Relay, agency: str, digest: str) -> receipts.Receipt:
    receipt = _only(_receipts_about(relay, agency, digest), "rejection receipt")
    assert receipt.kind == "rejected"
    return receipt


def _parked(relay: Relay, hub: str, digest: str) -> dict:
    parked = [r for r in relay.drain(hub, "parking", count=1) if hashlib.sha256(r.body).hexdigest() == digest]
    return _only(parked, "parked copy").headers


def test_accepted_and_delivered_receipts(relay: Relay) -> None:
    """The sender gets, in its inbox, a receipt 'accepted' from its hub and one 'delivered' from the
    recipient's hub, both hub-signed and bound to the SHA-256 of the exact bytes it sent."""
    doc = relay.document(N_COMMUNE, [C_COMMUNE])
    digest = hashlib.sha256(doc).hexdigest()
    relay.client(N_COMMUNE).send(doc)
    relay.take(C_COMMUNE, 1, accept=lambda i: i.body == doc)
    got = {r.kind: r for r in _receipts_about(relay, N_COMMUNE, digest, count=2)}
    assert set(got) == {"accepted", "delivered"}
    assert got["accepted"].hub == "H41" and got["delivered"].hub == "H14-D31"
    assert got["delivered"].recipients == (C_COMMUNE,)


def test_receipts_of_a_burst_go_back_bundled_each_once(relay: Relay) -> None:
    """The recipient's hub takes a burst of documents in a few I/O loop turns: their delivered
    receipts go back as fewer messages than receipts (bundles, held here at H14 while its worker
    is down), and once H14 runs again the sender gets every receipt exactly once."""
    relay.wait_idle()
    relay.stop_workers("H14-D31")
    docs = [relay.document(N_COMMUNE, [C_COMMUNE], subject=f"loạt {i}", size=300) for i in range(30)]
    client = relay.client(N_COMMUNE)
    for d in docs:
        client.send(d)
    _until(lambda: relay.depth("H14-D31", wire.Q_INGRESS) == len(docs))
    relay.stop_workers("H14")
    relay.start_worker("H14-D31")
    try:
        assert sorted(i.body for i in relay.take(C_COMMUNE, len(docs), timeout=60)) == sorted(docs)
        _until(lambda: relay.depth("H14-D31", wire.Q_INGRESS) == 0)
        bundles = relay.depth("H14", wire.Q_INGRESS)
        assert 0 < bundles < len(docs), f"{bundles} messages carry {len(docs)} delivered receipts"
    finally:
        relay.start_worker("H14")
    digests = {hashlib.sha256(d).hexdigest() for d in docs}
    trust = TrustStore.load(relay.settings.pki)

    def about_these(item: object) -> bool:
        return item.kind == "receipt" and receipts.verify(item.body, trust).receipt.document_sha256 in digests

    got = [receipts.verify(i.body, trust).receipt for i in relay.take(N_COMMUNE, 2 * len(docs), accept=about_these)]
    assert sorted((r.document_sha256, r.kind) for r in got) == sorted(
        (d, k) for d in digests for k in ("accepted", "delivered"))
    relay.wait_idle()
    assert relay.take(N_COMMUNE, 1, timeout=2, accept=about_these) == []


def test_receipts_issued_apart_go_back_in_one_bundle(relay: Relay) -> None:
    """Receipts a hub issues for another hub's agencies wait for more (the hold, here 1.5 s): the
    delivered receipts of two documents that reached the recipient's hub one after the other, in
    turns of their own, go back as one bundle (H41 claims both under that bundle's digest), and
    the sender gets each receipt once."""
    relay.wait_idle()
    relay.stop_workers("H14-D31")
    relay.start_worker("H14-D31", LIENTHONG_RECEIPT_HOLD_SECONDS="1.5")
    try:
        docs = [relay.document(N_COMMUNE, [C_COMMUNE], subject=f"cách nhau {i}", size=300) for i in range(2)]
        client = relay.client(N_COMMUNE)
        for d in docs:  # the second leaves once the first is in the recipient's inbox
            client.send(d)
            assert [i.body for i in relay.take(C_COMMUNE, 1)] == [d]
        delivered = _delivered_receipt(relay, docs)
        got = relay.take(N_COMMUNE, 2, accept=delivered)
        assert len(got) == 2
        claims = [f"inbox:{N_COMMUNE}#{hashlib.sha256(i.body).hexdigest()[:16]}" for i in got]
        with sqlite3.connect(Path(relay.settings.state_url) / "H41.sqlite3", timeout=10) as conn:
            rows = conn.execute("SELECT DISTINCT digest FROM hops WHERE hub = 'H41' AND target IN (?, ?)",
                                claims).fetchall()
        assert len(rows) == 1, f"the two delivered receipts came back in {len(rows)} bundles"
        relay.wait_idle()
        assert relay.take(N_COMMUNE, 1, timeout=2, accept=delivered) == []
    finally:
        relay.stop_workers("H14-D31")
        relay.start_worker("H14-D31")


def test_a_hub_killed_while_its_receipt_is_held_sends_the_document_once(relay: Relay) -> None:
    """The recipient's hub is SIGKILLed while the delivered receipt waits (hold 3 s): the inbox
    copy's claim was marked when the broker confirmed it, so the worker that takes the message
    over sends only the receipt.  The inbox queue holds the document once, and the sender still
    gets its delivered receipt."""
    relay.wait_idle()
    relay.stop_workers("H14-D31")
    worker = relay.start_worker("H14-D31", LIENTHONG_RECEIPT_HOLD_SECONDS="3")
    inbox = wire.inbox_queue(C_COMMUNE)
    doc = relay.document(N_COMMUNE, [C_COMMUNE], subject="biên nhận đang giữ", size=300)
    relay.client(N_COMMUNE).send(doc)
    _until(lambda: relay.depth("H14-D31", inbox) > 0)
    time.sleep(0.5)  # the claim is marked at most MARK_DELAY after the confirm; the receipt is still held
    worker.kill()
    worker.wait(timeout=15)
    relay.procs["H14-D31"].remove(worker)
    relay.start_worker("H14-D31")
    assert len(relay.take(N_COMMUNE, 1, timeout=60, accept=_delivered_receipt(relay, [doc]))) == 1
    relay.wait_idle()
    copies = [r for r in relay.drain("H14-D31", inbox, count=50, timeout=3) if r.body == doc]
    assert len(copies) == 1, f"the recipient's inbox got the document {len(copies)} times"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> str:
    """What a worker started with ``--metrics-port`` serves."""
    import urllib.request
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())


def _batches(port: int, hub: str) -> dict[float, float]:
    """The worker's ``lienthong_batch_size`` histogram: cumulative count of batches per bucket bound."""
    text = _metrics(port)
    prefix = f'lienthong_batch_size_bucket{{hub="{hub}",le="'
    return {float(line[len(prefix):].split('"')[0].replace("+Inf", "inf")): float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def _batches_or_none(port: int, hub: str) -> dict[float, float] | None:
    try:
        return _batches(port, hub) or None
    except OSError:
        return None


def test_documents_an_agency_hands_in_are_judged_together_up_to_a_batch(relay: Relay) -> None:
    """The entry hub gathers what its agencies hand in under load (here for up to 30 s): a
    document that comes alone is judged at once; ENTRY_BATCH_MAX documents sent one by one right
    after it are judged as one batch as soon as that many wait, long before the 30 s, and each
    reaches the recipient once.  The batch's hop records at H41 share one signature over their
    Merkle root (version 2, docs/wire.md): the recipient's SDK took every document, and the hubs'
    audit logs, which hold those records, verify."""
    from broker.relay.batches import ENTRY_BATCH_MAX
    relay.wait_idle()
    relay.stop_workers("H41")
    port = _free_port()
    relay.start_worker("H41", "--metrics-port", str(port), LIENTHONG_ENTRY_BATCH_SECONDS="30")
    try:
        _until(lambda: _batches_or_none(port, "H41") is not None)  # the worker is up
        client = relay.client(N_COMMUNE)
        alone = relay.document(N_COMMUNE, [C_COMMUNE], subject="một mình", size=300)
        client.send(alone)
        assert [i.body for i in relay.take(C_COMMUNE, 1, timeout=10)] == [alone], "a lone document waited"
        relay.wait_idle()  # its receipts are back: nothing from a hub ends the next wait
        docs = [relay.document(N_COMMUNE, [C_COMMUNE], subject=f"gom {i}", size=300) for i in range(ENTRY_BATCH_MAX)]
        start = time.monotonic()
        for d in docs:
            client.send(d)
        taken = relay.take(C_COMMUNE, len(docs), timeout=20)
        assert sorted(i.body for i in taken) == sorted(docs)
        assert time.monotonic() - start < 25, "the documents waited out the gathering time"
        counts = _batches(port, "H41")
        assert counts[ENTRY_BATCH_MAX] - counts[ENTRY_BATCH_MAX / 2] == 1, counts
        at_h41 = [i.trace[0][i.trace[0].rfind("}") + 1:].split(".") for i in taken]
        assert all(len(parts) == 3 for parts in at_h41) and len({parts[1] for parts in at_h41}) == 1, at_h41[:2]
    finally:
        relay.stop_workers("H41")
        relay.start_worker("H41")
    relay.wait_idle()
    assert relay.take(C_COMMUNE, 1, timeout=2) == []
    verified = relay.cli("audit", "verify-log")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_agency_document_waits_for_others_until_a_hub_hands_one_in(relay: Relay) -> None:
    """At the recipients' hub (gathering for 30 s), a document one of its agencies sends another
    right after a first one waits for more; a document forwarded by a neighbouring hub does not
    wait, and ends the wait of the one gathered before it: both are delivered long before the
    30 s.  The hub's hop time (``lienthong_hop_seconds``) counts the wait."""
    relay.wait_idle()
    relay.stop_workers("H14-D31")
    port = _free_port()
    relay.start_worker("H14-D31", "--metrics-port", str(port), LIENTHONG_ENTRY_BATCH_SECONDS="30")
    try:
        _until(lambda: _batches_or_none(port, "H14-D31") is not None)
        first, local = (relay.document(C_COMMUNE, [C_COMMUNE_2], subject=f"chờ gom {i}", size=300) for i in (1, 2))
        relay.client(C_COMMUNE).send(first)
        assert [i.body for i in relay.take(C_COMMUNE_2, 1, timeout=10)] == [first], "a lone document waited"
        relay.client(C_COMMUNE).send(local)
        assert relay.take(C_COMMUNE_2, 1, timeout=4) == [], "an agency's document did not wait for others"
        start = time.monotonic()
        forwarded = relay.document(N_COMMUNE, [C_COMMUNE], subject="qua bốn hub", size=300)
        relay.client(N_COMMUNE).send(forwarded)
        assert [i.body for i in relay.take(C_COMMUNE, 1, timeout=20)] == [forwarded]
        assert [i.body for i in relay.take(C_COMMUNE_2, 1, timeout=5)] == [local]
        assert time.monotonic() - start < 20
        [spent] = [float(line.rsplit(" ", 1)[1]) for line in _metrics(port).splitlines()
                   if line.startswith('lienthong_hop_seconds_sum{hub="H14-D31"}')]
        assert spent >= 4, f"the hops at H14-D31 took {spent:.3f} s in all, the wait not counted"
    finally:
        relay.stop_workers("H14-D31")
        relay.start_worker("H14-D31")


def _delivered_receipt(relay: Relay, docs: list[bytes]) -> Callable[[object], bool]:
    """Accepts an inbox item that is a hub's verified "delivered" receipt about one of ``docs``."""
    digests = {hashlib.sha256(d).hexdigest() for d in docs}
    trust = TrustStore.load(relay.settings.pki)

    def delivered(item: object) -> bool:
        if item.kind != "receipt":
            return False
        r = receipts.verify(item.body, trust).receipt
        return r.kind == "delivered" and r.document_sha256 in digests

    return delivered


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_tampered_document_rejected_with_signed_receipt(relay: Relay) -> None:
    """A document altered after signing: the sender gets a hub-signed rejection naming SIG_DIGEST,
    the hub parks the copy with the reason, and nothing reaches the recipient."""
    doc = relay.document(N_COMMUNE, [C_COMMUNE], subject="nguyên bản").replace(
        "nguyên bản".encode(), "đã sửa đổi".encode())
    digest = hashlib.sha256(doc).hexdigest()
    relay.client(N_COMMUNE).send(doc)
    receipt = _rejection(relay, N_COMMUNE, digest)
    assert (receipt.code, receipt.hub) == ("SIG_DIGEST", "H41")
    headers = _parked(relay, "H41", digest)
    assert headers["lt-code"] == "SIG_DIGEST" and headers["lt-reason"]
    relay.wait_idle()
    assert relay.documents_waiting(C_COMMUNE) == []


def test_unknown_recipient_rejected(relay: Relay) -> None:
    """A recipient missing from the directory: RECIPIENT_UNKNOWN back to the sender."""
    doc = relay.document(N_COMMUNE, ["999.99.99.H99"])
    relay.client(N_COMMUNE).send(doc)
    assert _rejection(relay, N_COMMUNE, hashlib.sha256(doc).hexdigest()).code == "RECIPIENT_UNKNOWN"


def test_spoofed_sender_rejected(relay: Relay) -> None:
    """An agency pushing a document signed by and from another agency of its hub is refused;
    the rejection goes to the account that pushed it."""
    doc = relay.document(N_COMMUNE_2, [N_PROVINCE])  # genuine document of commune 2
    relay.client(N_COMMUNE).send(doc)                # pushed by commune 1
    assert _rejection(relay, N_COMMUNE, hashlib.sha256(doc).hexdigest()).code == "SENDER_NOT_ALLOWED"


def test_signer_not_from_rejected(relay: Relay) -> None:
    """A document claiming to come from one agency but signed with another's key: SIGNER_MISMATCH."""
    doc = relay.document(N_COMMUNE, [N_PROVINCE], signer=N_COMMUNE_2)
    relay.client(N_COMMUNE).send(doc)
    assert _rejection(relay, N_COMMUNE, hashlib.sha256(doc).hexdigest()).code == "SIGNER_MISMATCH"


def test_garbage_rejected_to_publisher(relay: Relay) -> None:
    """Bytes that are not XML: the publishing agency still gets a signed XML_MALFORMED rejection."""
    junk = b"1212<?xml version='1.0'?><edXML/>"
    relay.client(N_COMMUNE).send(junk)
    assert _rejection(relay, N_COMMUNE, hashlib.sha256(junk).hexdigest()).code == "XML_MALFORMED"


def test_duplicate_suppressed(relay: Relay) -> None:
    """The same signed bytes sent three times reach the inbox once; a later document still flows."""
    doc = relay.document(N_COMMUNE, [C_COMMUNE_2])
    client = relay.client(N_COMMUNE)
    for _ in range(3):
        client.send(doc)
    marker = relay.document(N_COMMUNE, [C_COMMUNE_2], subject="marker")
    client.send(marker)
    got = relay.take(C_COMMUNE_2, 2, accept=lambda i: i.body in (doc, marker))
    assert sorted(i.body == doc for i in got) == [False, True]
    relay.wait_idle()
    assert relay.documents_waiting(C_COMMUNE_2) == []


def test_duplicate_of_rejected_gets_no_second_receipt(relay: Relay) -> None:
    """A failed message sent twice: one rejection, never a second receipt (nor a positive one)."""
    doc = relay.document(N_COMMUNE, ["999.99.99.H98"])
    client = relay.client(N_COMMUNE)
    client.send(doc)
    client.send(doc)
    digest = hashlib.sha256(doc).hexdigest()
    assert _rejection(relay, N_COMMUNE, digest).code == "RECIPIENT_UNKNOWN"
    relay.wait_idle()
    assert _receipts_about(relay, N_COMMUNE, digest, timeout=2) == []  # no second one, positive or not


def test_agency_cannot_read_another_inbox(relay: Relay) -> None:
    """An agency's credentials are refused on another agency's inbox and on another hub."""
    from broker.relay.amqp import blocking
    mine = relay.client(N_COMMUNE)
    with pytest.raises(errors.AccessRefused):
        blocking.fetch(mine.url, wire.inbox_queue(N_COMMUNE_2), lambda r: False)
    other_hub = relay.agency_url(N_COMMUNE, "H14")
    with pytest.raises(errors.AccessRefused):
        blocking.publish(other_hub, wire.agency_exchange(N_COMMUNE), "", b"<x/>", message_id="x", user_id=None)
    with pytest.raises(errors.AccessRefused):  # nor may it write to another agency's entry, or the ingress
        blocking.publish(mine.url, wire.agency_exchange(N_COMMUNE_2), "", b"<x/>", message_id="x", user_id=None)
    with pytest.raises(errors.AccessRefused):
        blocking.publish(mine.url, wire.EX_INGRESS, "", b"<x/>", message_id="x", user_id=None)


def test_agency_cannot_forge_user_id(relay: Relay) -> None:
    """Publishing with another account's user_id is refused by the broker itself."""
    from broker.relay.amqp import blocking
    mine = relay.client(N_COMMUNE)
    with pytest.raises(errors.LienthongError):
        blocking.publish(mine.url, wire.agency_exchange(N_COMMUNE), "", b"<x/>", message_id="x",
                          user_id=relay.names.agency_user(N_COMMUNE_2))


@pytest.mark.parametrize("fault", ["before-ack", "after-publish"])
def test_worker_killed_mid_flight(relay: Relay, fault: str) -> None:
    """The last hub's worker dies right after its publish was confirmed (before the store or the ack):
    the redelivered message is handled again and the recipient gets the document exactly once."""
    relay.stop_workers("H14-D31")
    doomed = relay.start_worker("H14-D31", LIENTHONG_FAULT=f"{fault}:1")
    doc = relay.document(N_COMMUNE, [C_COMMUNE], subject=f"killed {fault}")
    relay.client(N_COMMUNE).send(doc)
    assert doomed.wait(timeout=30) == 137
    relay.start_worker("H14-D31")
    got = relay.take(C_COMMUNE, 1, accept=lambda i: i.body == doc)
    assert len(got) == 1
    time.sleep(3)  # past the 2 s lease: any second copy would be published by now
    relay.wait_idle()
    assert [i for i in relay.take(C_COMMUNE, 1, timeout=2) if i.body == doc] == []


def test_worker_reconnects_when_broker_drops_connections(relay: Relay) -> None:
    """The broker closes every connection of the hubs; workers reconnect and the relay carries on."""
    from broker.core.errors import ConfigError
    from broker.relay.provision import Management, q
    m = Management(relay.settings.mgmt_url)
    closed = 0
    for hub in relay.topology.hubs:
        for conn in m.get(f"/api/vhosts/{q(relay.names.vhost(hub))}/connections") or []:
            path = f"/api/connections/{q(conn['name'])}"
            try:
                m.request("DELETE", path)
                closed += 1
            except ConfigError as exc:  # a worker that lost one connection closes its others itself:
                if "HTTP 404" in exc.message:  # gone before the call
                    continue
                if "HTTP 500" not in exc.message:  # 500: it ended during the call, and must be gone
                    raise
                _until(lambda p=path: _gone(m, p), timeout=10)
    assert closed > 0
    time.sleep(1)
    doc = relay.document(N_COMMUNE, [C_COMMUNE], subject="after reconnect")
    relay.client(N_COMMUNE).send(doc)
    assert [i.body for i in relay.take(C_COMMUNE, 1, timeout=60, accept=lambda i: i.body == doc)] == [doc]
    assert "reconnecting" in relay.log_text()


def _gone(m: Management, path: str) -> bool:
    """The management API no longer knows ``path`` (404); any other error is raised."""
    from broker.core.errors import ConfigError
    try:
        m.get(path)
    except ConfigError as exc:
        if "HTTP 404" in exc.message:
            return True
        raise
    return False


@pytest.mark.postgres
def test_competing_workers_on_postgres(rabbitmq_urls: tuple[str, str], new_postgres_url: str,
                                       tmp_path: Path) -> None:
    """Two workers per hub sharing a PostgreSQL state store created empty for this test (the eight
    workers create its schema at the same moment): 40 documents, each delivered exactly once."""
    relay = Relay(tmp_path / "pg", *rabbitmq_urls, state_url=new_postgres_url, workers=2)
    try:
        docs = [relay.document(N_COMMUNE, [C_COMMUNE], subject=f"pg {i}", size=500) for i in range(40)]
        client = relay.client(N_COMMUNE)
        for d in docs:
            client.send(d)
        client.send(docs[0])  # and one duplicate
        got = relay.take(C_COMMUNE, 40, timeout=90)
        assert sorted(i.body for i in got) == sorted(docs)
        relay.wait_idle()
        assert relay.documents_waiting(C_COMMUNE) == []
    finally:
        relay.close()
