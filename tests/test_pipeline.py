"""The hub worker's pipeline with no broker: a real hop (signatures, receipts, hop records) and a real
SQLite state store, over the in-memory transport (``broker/relay/memory.py``), whose virtual clock
runs back-offs and holds at once.  Each test plays one of the moments RabbitMQ-based tests can only
hit by chance: a duplicate, a crash between publishing and marking, a document id or a status
reused, a kill while receipts are held, retries running out, a refused publish, a connection lost
mid-batch, a neighbour's certificate revoked while the hub runs, a forged copy before the genuine one."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from broker.core import receipts, wire
from broker.core.edxml import Organ, ResponseFor, build_status
from broker.core.hoprecords import PENDING, parse_record, verify_record
from broker.core.signer import sign
from broker.core.topology import Topology
from broker.core.trust import TrustSource
from broker.relay import devpki
from broker.relay.assemble import hub_certificates
from broker.relay.delivery import Delivery, Stage, StageError
from broker.relay.hooks import Hook
from broker.relay.livetrust import LiveTrust
from broker.relay.memory import MemoryBroker, MemoryTransport, Stored
from broker.relay.store import SqlStore, sqlite_store
from broker.relay.transport import Outgoing, Received
from broker.relay.worker import HubWorker
from broker.settings import PkiLayout, Tuning
from tests import hops

SENDER, FAR, NEAR = "000.00.51.H41", "001.00.31.H14", "000.00.52.H41"
TO_NATIONAL = "national:in.link.H41:"
SENDER_INBOX = f".:inbox:{SENDER}"
PARKING = ".:parking:"


class Hub:
    """One hub's state store and workers on an in-memory broker."""

    def __init__(self, pki: Path, topology: Topology, hub: str, path: Path, *, lease: float = 15.0,
                 hold: float = 0.25, store_timeout: float = 1.0, extra_hooks: tuple[Hook, ...] = (),
                 trust: TrustSource | None = None) -> None:
        """``trust``: where the workers' trust store comes from (default: ``pki``'s, fixed)."""
        self.pki, self.topology, self.hub, self.trust = pki, topology, hub, trust
        self.broker = MemoryBroker()
        self.store = sqlite_store(path / f"{hub}.sqlite3", lease_seconds=lease, timeout=store_timeout)
        self.tuning = Tuning(receipt_hold_seconds=hold, lease_seconds=lease)
        self.extra_hooks = extra_hooks
        self.workers: list[HubWorker] = []

    def worker(self) -> HubWorker:
        """A new worker process of this hub (its own owner id), with a session open."""
        trust = self.trust.current() if self.trust is not None else None
        w = HubWorker(hops.hop(self.pki, self.topology, self.hub, trust=trust), self.store, PkiLayout(self.pki),
                      MemoryTransport(self.broker), trust=self.trust, tuning=self.tuning,
                      extra_hooks=self.extra_hooks)
        w.open_session()
        self.workers.append(w)
        return w

    def run(self, horizon: float = 5.0) -> None:
        """Run every live session until nothing is due within ``horizon`` virtual seconds."""
        self.broker.horizon = horizon
        self.broker.run()

    def hand_in(self, body: bytes, agency: str = SENDER) -> None:
        self.broker.put("ingress", body, exchange=wire.agency_exchange(agency))

    def queue(self, name: str) -> list[Stored]:
        return self.broker.messages(name)

    def unsettled(self) -> int:
        """Deliveries neither acked nor requeued, over every live session, plus what waits in the ingress."""
        return len(self.broker.messages("ingress")) + sum(len(s.consumer.unacked) for s in self.broker.sessions)

    def close(self) -> None:
        self.store.close()


@pytest.fixture()
def h41(dev_pki: Path, topology: Topology, tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(dev_pki, topology, "H41", tmp_path)
    yield hub
    hub.close()


def _doc(hub: Hub, **kw: Any) -> bytes:
    return hops.document(hub.pki, hub.topology, SENDER, [FAR], **kw)


def _receipts(queue: list[Stored]) -> list[receipts.Receipt]:
    return [receipts.read_bytes(m.body) for m in queue]


def test_a_document_is_forwarded_once_and_acked(h41: Hub) -> None:
    """The baseline: the copy to the next hub (message id = the SHA-256 of the signed bytes), the
    sender's accepted receipt, the claims confirmed, the delivery acked."""
    h41.worker()
    body = _doc(h41)
    h41.hand_in(body)
    h41.run()
    [forwarded] = h41.queue(TO_NATIONAL)
    assert forwarded.body == body and forwarded.message_id == wire.message_id(body)
    assert [r.kind for r in _receipts(h41.queue(SENDER_INBOX))] == ["accepted"]
    assert h41.unsettled() == 0
    assert h41.store.claim("H41", wire.message_id(body), ["hub:national"], "someone") == {"hub:national": "done"}


def test_a_duplicate_is_acked_and_not_published_again(h41: Hub) -> None:
    """The same bytes a second time: the claims are done, nothing is published, the delivery is acked.
    Two copies in one batch: the second waits a retry tier, then finds the first's claims done."""
    with capture_logs() as logs:  # the worker's logger is bound when it is made
        w = h41.worker()
        body = _doc(h41)
        h41.hand_in(body)
        h41.run()
        h41.hand_in(body)
        h41.run()
    assert len(h41.queue(TO_NATIONAL)) == 1 and len(h41.queue(SENDER_INBOX)) == 1
    assert [e["event"] for e in logs if e["event"].startswith("duplicate")] == ["duplicate suppressed"]
    twin = _doc(h41)
    h41.hand_in(twin)
    h41.hand_in(twin)
    h41.run()
    assert h41.broker.move(".:retry:r1s", "ingress", exchange=wire.EX_INGRESS) == 1
    h41.run()
    assert [m.body for m in h41.queue(TO_NATIONAL)] == [body, twin]
    assert w.stats.counts["duplicates"] == 2 and h41.unsettled() == 0


def test_a_crash_between_confirm_and_mark_is_taken_over(dev_pki: Path, topology: Topology, tmp_path: Path) -> None:
    """A worker dies after the broker confirmed its copies, before it marked their claims: the
    redelivery goes to another worker, whose claim takes the dead one's over (its lease ran out)
    and publishes again, under the same message id (the recipient drops the twin).  A third copy
    then finds every claim done."""
    hub = Hub(dev_pki, topology, "H41", tmp_path, lease=0.0)
    try:
        first = hub.worker()
        body = _doc(hub)
        hub.hand_in(body)
        hub.run(horizon=0.001)  # confirmed, but the marks wait MARK_DELAY: not run
        assert len(hub.queue(TO_NATIONAL)) == 1
        hub.broker.crash(first.session)  # type: ignore[arg-type]
        assert len(hub.queue("ingress")) == 1  # unacked: back in the queue
        hub.worker()
        hub.run()
        assert {m.message_id for m in hub.queue(TO_NATIONAL)} == {wire.message_id(body)}
        assert len(hub.queue(TO_NATIONAL)) == 2 and hub.unsettled() == 0
        hub.hand_in(body)
        hub.run()
        assert len(hub.queue(TO_NATIONAL)) == 2
    finally:
        hub.close()


def test_a_reused_document_id_is_refused_in_the_admitting_transaction(h41: Hub) -> None:
    """Other bytes under a document id already accepted: refused DOCUMENT_ID_REUSED like any other
    refusal (parked, a signed hop record in the audit log, the sender told by a signed receipt),
    never forwarded; the same other bytes again are a duplicate of that refusal."""
    w = h41.worker()
    first, second = _doc(h41, document_id="CV-2026-7"), _doc(h41, document_id="CV-2026-7")
    h41.hand_in(first)
    h41.run()
    h41.hand_in(second)
    h41.run()
    assert [m.body for m in h41.queue(TO_NATIONAL)] == [first]
    [parked] = h41.queue(PARKING)
    assert parked.body == second and parked.headers[wire.H_CODE] == "DOCUMENT_ID_REUSED"
    told = _receipts(h41.queue(SENDER_INBOX))
    assert [(r.kind, r.code) for r in told] == [("accepted", ""), ("rejected", "DOCUMENT_ID_REUSED")]
    refusals = [parse_record(r.body) for r in h41.store.audit_rows(hub="H41") if r.kind == "hop"
                and r.digest == wire.message_id(second)]
    assert [(r.verdict, r.code) for r in refusals] == [("rejected", "DOCUMENT_ID_REUSED")]
    h41.hand_in(second)
    h41.run()
    assert len(h41.queue(PARKING)) == 1 and len(h41.queue(SENDER_INBOX)) == 2
    assert w.stats.counts["rejected"] == 1 and h41.unsettled() == 0


def test_a_reserialised_status_is_refused_in_the_admitting_transaction(h41: Hub) -> None:
    """A status is known by (sender, document answered, status code): the same status 03 with other
    bytes (another description) is refused STATUS_REUSED like any refusal (parked, the sender
    told), never forwarded; another status code about the same document passes."""
    w = h41.worker()
    key = hops.agency_key(h41.pki, SENDER)

    def status(code: str, description: str) -> bytes:
        return sign(build_status(Organ(SENDER, "xã"), ResponseFor(FAR, "CV-2026-9", "12/UBND"), code,
                                 description=description), key)

    first, again, done = status("03", "Đã tiếp nhận"), status("03", "Đã tiếp nhận lại"), status("06", "Xong")
    for body in (first, again, done):
        h41.hand_in(body)
        h41.run()
    assert [m.body for m in h41.queue(TO_NATIONAL)] == [first, done]
    [parked] = h41.queue(PARKING)
    assert parked.body == again and parked.headers[wire.H_CODE] == "STATUS_REUSED"
    assert [(r.kind, r.code) for r in _receipts(h41.queue(SENDER_INBOX))] == [("rejected", "STATUS_REUSED")]
    h41.hand_in(again)
    h41.run()
    assert len(h41.queue(PARKING)) == 1 and w.stats.counts["rejected"] == 1 and h41.unsettled() == 0


def test_a_running_hub_refuses_a_revoked_neighbours_records_and_serves_the_others(
        dev_pki: Path, topology: Topology, tmp_path: Path) -> None:
    """The national hub runs, following its trust directory.  H41's certificate is revoked: from the
    next snapshot on, what H41 forwards is parked HUB_REVOKED, while what H14 forwards goes on;
    before, both passed."""
    pki = tmp_path / "pki"
    shutil.copytree(dev_pki, pki)
    live = LiveTrust(pki)
    national = Hub(pki, topology, "national", tmp_path, trust=live)
    upstream = hops.hops(pki, topology)

    def arrive() -> tuple[bytes, bytes]:
        up = hops.document(pki, topology, SENDER, [FAR])
        down = hops.document(pki, topology, FAR, [SENDER])
        for body, route, sender in ((up, ("H41",), SENDER), (down, ("H14-D31", "H14"), FAR)):
            last = hops.carry(upstream, body, route, sender=sender)[-1]
            [onward] = [c for c in last.copies
                        if str(c.target) == "hub:national" and wire.kind_of(c.headers) == "edxml"]
            national.broker.put("ingress", body, exchange=wire.link_exchange(route[-1]), headers=onward.headers)
        return up, down

    try:
        national.worker()
        before = arrive()
        national.run()
        assert [m.body for m in national.queue("H14:in.link.national:")] == [before[0]]
        assert [m.body for m in national.queue("H41:in.link.national:")] == [before[1]]
        devpki.revoke(pki, [PkiLayout(pki).hub("H41")[1]])
        assert live.refresh(every=0)
        after = arrive()
        national.run()
        [parked] = national.queue(PARKING)
        assert parked.body == after[0] and parked.headers[wire.H_CODE] == "HUB_REVOKED"
        assert [m.body for m in national.queue("H41:in.link.national:")] == [before[1], after[1]]
        assert national.unsettled() == 0
    finally:
        national.close()


def test_a_forged_copy_first_does_not_stop_the_genuine_one(dev_pki: Path, topology: Topology,
                                                           tmp_path: Path) -> None:
    """A copy whose first record was re-dated 2019 (its signature broken) reaches H14 before the
    genuine one: it is parked TRACE_INVALID, a refusal of that copy's trace, and the genuine copy
    is forwarded (a standing CERT_EXPIRED used to stop it)."""
    upstream = hops.hops(dev_pki, topology)
    body = hops.document(dev_pki, topology, SENDER, [FAR])
    [genuine] = [c for c in hops.carry(upstream, body, ("H41", "national"))[-1].copies if str(c.target) == "hub:H14"
                 and wire.kind_of(c.headers) == "edxml"]
    first, *rest = genuine.headers[wire.H_TRACE]
    forged = {**genuine.headers, wire.H_TRACE: [first.replace(parse_record(first).at, "2019-03-01T08:00:00.000000Z"),
                                                 *rest]}
    h14 = Hub(dev_pki, topology, "H14", tmp_path)
    try:
        h14.worker()
        for headers in (forged, genuine.headers):
            h14.broker.put("ingress", body, exchange=wire.link_exchange("national"), headers=headers)
            h14.run()
        [parked] = h14.queue(PARKING)
        assert parked.headers[wire.H_CODE] == "TRACE_INVALID"
        assert [m.body for m in h14.queue("H14-D31:in.link.H14:")] == [body]
    finally:
        h14.close()


def test_a_kill_while_receipts_are_held_resends_only_the_receipt(dev_pki: Path, topology: Topology,
                                                                 tmp_path: Path) -> None:
    """At the last hub, the delivered receipt for the sender (on another hub) waits to leave in a
    bundle; the inbox copy is out and its claim marked meanwhile.  The worker is killed during the
    hold: the next one puts nothing into the inbox again and sends the receipt once."""
    upstream = hops.hops(dev_pki, topology)
    body = hops.document(dev_pki, topology, SENDER, [FAR])
    at_h14 = hops.carry(upstream, body, ("H41", "national", "H14"))[-1]
    [onward] = [c for c in at_h14.copies if str(c.target) == "hub:H14-D31"]
    hub = Hub(dev_pki, topology, "H14-D31", tmp_path, lease=0.0)
    try:
        first = hub.worker()
        hub.broker.put("ingress", onward.body, exchange=wire.link_exchange("H14"), headers=onward.headers)
        hub.run(horizon=0.1)  # the inbox copy confirmed and marked; the receipt's 0.25 s hold not over
        inbox, back = f".:inbox:{FAR}", "H14:in.link.H14-D31:"
        assert len(hub.queue(inbox)) == 1 and hub.queue(back) == []
        hub.broker.crash(first.session)  # type: ignore[arg-type]
        hub.worker()
        hub.run()
        assert [m.body for m in hub.queue(inbox)] == [body]
        [receipt] = hub.queue(back)
        assert receipt.headers[wire.H_KIND] == wire.Kind.RECEIPT
        assert receipts.read_bytes(receipt.body).kind == "delivered"
        assert hub.unsettled() == 0
    finally:
        hub.close()


def _lock(path: Path) -> sqlite3.Connection:
    """Hold the SQLite store's write lock (as another process would) until closed."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def _through_the_tiers(hub: Hub) -> None:
    """Let every retry tier's TTL run out: what waits there is dead-lettered back into the ingress."""
    for tier in ("r1s", "r10s", "r60s"):
        hub.run()
        assert hub.broker.move(f".:retry:{tier}", "ingress", exchange=wire.EX_INGRESS) == 1, tier
    hub.run()


def test_retries_running_out_with_the_store_down_refuse_like_any_refusal(dev_pki: Path, topology: Topology,
                                                                          tmp_path: Path) -> None:
    """The store stays locked through every tier: the document is parked RETRY_EXHAUSTED, its
    first entry kept, and its sender gets a hub-signed rejection (published unclaimed: the store
    that would claim it is the thing failing)."""
    hub = Hub(dev_pki, topology, "H41", tmp_path, store_timeout=0.05)
    lock = _lock(tmp_path / "H41.sqlite3")
    try:
        hub.worker()
        body = _doc(hub)
        hub.hand_in(body)
        _through_the_tiers(hub)
        [parked] = hub.queue(PARKING)
        assert parked.body == body and parked.headers[wire.H_CODE] == "RETRY_EXHAUSTED"
        assert parked.headers[wire.H_ORIGIN] == f"agency:{SENDER}"
        [told] = hub.queue(SENDER_INBOX)
        checked = receipts.verify(told.body, hops.hop(dev_pki, topology, "H41").trust).receipt
        assert (checked.kind, checked.code, checked.hub) == ("rejected", "RETRY_EXHAUSTED", "H41")
        assert hub.queue(TO_NATIONAL) == [] and hub.unsettled() == 0
    finally:
        lock.close()
        hub.close()


def test_retries_running_out_with_the_store_up_are_claimed_and_logged(h41: Hub) -> None:
    """Another worker holds the claims for good: after the last tier the refusal is admitted like
    any other (its hop record and receipt in the audit log) and published once, even when the
    exhausted delivery comes back again."""
    body = _doc(h41)
    digest = wire.message_id(body)
    h41.store.claim("H41", digest, ["hub:national", f"accepted>inbox:{SENDER}"], "a-live-worker-elsewhere")
    h41.worker()
    h41.hand_in(body)
    _through_the_tiers(h41)
    [parked] = h41.queue(PARKING)
    assert parked.headers[wire.H_CODE] == "RETRY_EXHAUSTED"
    assert [(r.kind, r.code) for r in _receipts(h41.queue(SENDER_INBOX))] == [("rejected", "RETRY_EXHAUSTED")]
    logged = [r for r in h41.store.audit_rows(hub="H41") if r.digest == digest]
    assert [(parse_record(r.body).verdict, parse_record(r.body).code) for r in logged if r.kind == "hop"] == [
        ("rejected", "RETRY_EXHAUSTED")]
    assert [receipts.read_bytes(r.body.encode()).code for r in logged if r.kind == "receipt"] == ["RETRY_EXHAUSTED"]
    again = {k: v for k, v in parked.headers.items() if k not in (wire.H_CODE, wire.H_REASON, wire.H_HUB)}
    h41.broker.put("ingress", parked.body, exchange=wire.EX_INGRESS, headers=again | {wire.H_ATTEMPT: 3})
    h41.run()
    assert len(h41.queue(PARKING)) == 1 and h41.unsettled() == 0


def test_a_nacked_publish_requeues_and_delivers_once(h41: Hub) -> None:
    """The broker refuses the copy to the next hub once: the delivery goes back to the queue, is
    redelivered and published again; the next hub gets it once, and it is acked once."""
    refused: list[str] = []

    def nack_first(queue: str, _m: Outgoing) -> str:
        if queue == TO_NATIONAL and not refused:
            refused.append(queue)
            return "nack"
        return "ack"

    h41.broker.confirming = nack_first  # type: ignore[assignment]
    with capture_logs() as logs:
        w = h41.worker()
        body = _doc(h41)
        h41.hand_in(body)
        h41.run()
    assert refused and [m.body for m in h41.queue(TO_NATIONAL)] == [body]
    assert {r.document_id for r in _receipts(h41.queue(SENDER_INBOX))} == {receipts.read_bytes(
        h41.queue(SENDER_INBOX)[0].body).document_id}
    assert "publish not confirmed; message requeued" in [e["event"] for e in logs]
    assert w.stats.counts["received"] == 2 and h41.unsettled() == 0


def test_a_connection_lost_mid_batch_loses_and_doubles_nothing(h41: Hub) -> None:
    """Five documents published, their confirms not back, when the connection to the hub's own
    broker drops: the session ends, the deliveries return, the next session publishes them again
    under the same ids; every one is acked, each document reaches the next hub, and nothing else does."""
    h41.broker.confirming = lambda _q, _m: "hold"
    w = h41.worker()
    bodies = [_doc(h41) for _ in range(5)]
    for body in bodies:
        h41.hand_in(body)
    h41.run(horizon=0.1)
    assert len(h41.queue(TO_NATIONAL)) == 5 and w.session is not None
    h41.broker.lose(w.session, "consumer")  # type: ignore[arg-type]
    h41.run()
    assert h41.broker.sessions == [] and len(h41.queue("ingress")) == 5
    h41.broker.confirming = lambda _q, _m: "ack"
    w.open_session()
    h41.run()
    assert {m.message_id for m in h41.queue(TO_NATIONAL)} == {wire.message_id(b) for b in bodies}
    assert h41.unsettled() == 0
    for body in bodies:
        assert h41.store.claim("H41", wire.message_id(body), ["hub:national"], "x") == {"hub:national": "done"}


def test_a_batch_of_deliveries_is_sealed_with_one_signature(h41: Hub) -> None:
    """Four documents and one whose signature is broken, judged in one batch: the forwarded copies'
    records, the refusal's record and the audit log's entries are one batch's version 2 tokens
    (one signature, each its own path), each verifying with H41's certificate; nothing unsigned
    is published or logged."""
    w = h41.worker()
    good = [_doc(h41, subject=f"Lô {i}") for i in range(4)]
    broken = _doc(h41, subject="Hỏng").replace("Hỏng".encode(), "Hổng".encode())
    for body in (*good, broken):
        h41.hand_in(body)
    h41.run()
    forwarded = h41.queue(TO_NATIONAL)
    assert sorted(m.body for m in forwarded) == sorted(good) and len(h41.queue(PARKING)) == 1
    tokens = [m.headers[wire.H_TRACE][-1] for m in forwarded]
    logged = [r.body for r in h41.store.audit_rows(hub="H41") if r.kind == "hop"]
    assert set(tokens) < set(logged) and len(logged) == 5 and w.stats.counts["rejected"] == 1
    cert = hub_certificates(h41.pki, h41.topology)["H41"]
    tails = [t[t.rfind("}") + 1:].split(".") for t in logged]
    assert all(len(t) == 3 for t in tails) and len({t[1] for t in tails}) == 1
    assert sorted(verify_record(t, cert).verdict for t in logged) == ["forwarded"] * 4 + ["rejected"]
    assert not any(PENDING in t for m in forwarded for t in m.headers[wire.H_TRACE])


def test_with_record_batches_off_each_record_is_signed_alone(h41: Hub) -> None:
    """``LIENTHONG_RECORD_BATCHES=off`` (for SDKs older than version 2 records): the same batch
    of four writes four version 1 records, each with its own signature, each verifying."""
    h41.tuning = replace(h41.tuning, record_batches=False)
    h41.worker()
    bodies = [_doc(h41, subject=f"Riêng {i}") for i in range(4)]
    for body in bodies:
        h41.hand_in(body)
    h41.run()
    tokens = [m.headers[wire.H_TRACE][-1] for m in h41.queue(TO_NATIONAL)]
    tails = [t[t.rfind("}") + 1:].split(".") for t in tokens]
    assert len(tokens) == 4 and all(len(t) == 2 for t in tails) and len({t[1] for t in tails}) == 4
    cert = hub_certificates(h41.pki, h41.topology)["H41"]
    assert sorted(verify_record(t, cert).digest for t in tokens) == sorted(wire.message_id(b) for b in bodies)


def test_a_batch_whose_records_cannot_be_signed_is_tried_again(h41: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's key fails while a batch is sealed (a token pulled out): nothing of the batch is
    published or logged, each delivery goes to the first retry tier; the key back, each is
    forwarded once and acked."""
    from broker.core import hoprecords

    real = hoprecords._sign

    def unplugged(_key: Any, _data: bytes) -> bytes:
        raise OSError("the token is gone")

    w = h41.worker()
    bodies = [_doc(h41, subject=f"Khoá {i}") for i in range(3)]
    monkeypatch.setattr(hoprecords, "_sign", unplugged)
    for body in bodies:
        h41.hand_in(body)
    h41.run(horizon=0.1)
    assert h41.queue(TO_NATIONAL) == [] and h41.queue(SENDER_INBOX) == [] and h41.queue(PARKING) == []
    assert h41.store.audit_rows(hub="H41") == [] and w.stats.counts.get("forwarded", 0) == 0
    assert len(h41.queue(".:retry:r1s")) == 3 and h41.unsettled() == 0
    monkeypatch.setattr(hoprecords, "_sign", real)
    assert h41.broker.move(".:retry:r1s", "ingress", exchange=wire.EX_INGRESS) == 3  # the tier's TTL runs out
    h41.run()
    assert sorted(m.body for m in h41.queue(TO_NATIONAL)) == sorted(bodies) and h41.unsettled() == 0


OUT_NATIONAL = wire.outbound_queue("national")


def test_copies_for_a_neighbour_whose_broker_is_away_wait_and_go_once_it_is_back(h41: Hub) -> None:
    """The national hub's broker cannot be reached: H41 serves on.  A document for another
    province waits, judged and claimed, in H41's own out.national queue (same bytes, id and
    headers), its sender told 'accepted'; one for a commune of H41 is delivered meanwhile.  When
    the link is back the waiting copy goes to the national hub once and leaves the queue."""
    def counted(what: str) -> float:
        return REGISTRY.get_sample_value("lienthong_outbound_total", {"hub": "H41", "neighbour": "national",
                                                                      "what": what}) or 0.0

    kept, forwarded_before = counted("kept"), counted("forwarded")
    h41.broker.cut("national")
    with capture_logs() as logs:
        w = h41.worker()
        far, near = _doc(h41), hops.document(h41.pki, h41.topology, SENDER, [NEAR])
        h41.hand_in(far)
        h41.hand_in(near)
        h41.run()
    assert h41.queue(TO_NATIONAL) == [] and h41.unsettled() == 0
    [waiting] = h41.queue(OUT_NATIONAL)
    assert (waiting.body, waiting.message_id, waiting.exchange) == (far, wire.message_id(far), wire.EX_OUTBOUND)
    assert [m.body for m in h41.queue(f".:inbox:{NEAR}")] == [near]
    assert sorted(r.kind for r in _receipts(h41.queue(SENDER_INBOX))) == ["accepted", "accepted", "delivered"]
    assert [e["subject"] for e in logs if e.get("kind") == "link-down"] == ["national"]
    assert h41.store.claim("H41", wire.message_id(far), ["hub:national"], "x") == {"hub:national": "done"}
    assert counted("kept") == kept + 1 and counted("forwarded") == forwarded_before
    with capture_logs() as logs:
        h41.broker.mend("national")
        h41.run()
    [forwarded] = h41.queue(TO_NATIONAL)
    assert (forwarded.body, forwarded.message_id, forwarded.user_id) == (far, wire.message_id(far),
                                                                         w.pipeline.addresses.names.link_user("H41"))
    assert forwarded.headers == waiting.headers and forwarded.exchange == wire.link_exchange("H41")
    assert h41.queue(OUT_NATIONAL) == [] and h41.unsettled() == 0
    assert [(e["event"], e["kind"]) for e in logs if e.get("kind") == "link-down"] == [("alert cleared", "link-down")]
    assert counted("forwarded") == forwarded_before + 1


def test_a_link_lost_while_copies_are_unconfirmed_sends_them_to_wait(h41: Hub) -> None:
    """Three copies on their way to the national hub, unconfirmed, when its broker goes away: the
    session goes on, the deliveries come back and their copies wait in out.national; nothing for
    the national hub is lost, and every delivery is settled."""
    h41.broker.confirming = lambda q, _m: "hold" if q == TO_NATIONAL else "ack"
    h41.worker()
    bodies = [_doc(h41) for _ in range(3)]
    for body in bodies:
        h41.hand_in(body)
    h41.run(horizon=0.1)
    assert len(h41.queue(TO_NATIONAL)) == 3 and h41.queue(OUT_NATIONAL) == []
    h41.broker.cut("national")
    h41.run()
    assert len(h41.broker.sessions) == 1, "a neighbour's link going down must not end the session"
    assert sorted(m.message_id for m in h41.queue(OUT_NATIONAL)) == sorted(wire.message_id(b) for b in bodies)
    assert h41.unsettled() == 0


def test_forwarding_cut_short_keeps_the_rest_and_sends_twins_at_worst(h41: Hub) -> None:
    """The link comes back, the waiting copies are forwarded, and it drops again before the
    national broker's confirms came back: they stay in out.national (the national broker may have
    them: twins, dropped there by their message id).  Next time they are all forwarded, and the
    queue is empty."""
    h41.broker.cut("national")
    h41.worker()
    bodies = [_doc(h41) for _ in range(3)]
    for body in bodies:
        h41.hand_in(body)
    h41.run()
    assert len(h41.queue(OUT_NATIONAL)) == 3
    h41.broker.confirming = lambda q, _m: "hold" if q == TO_NATIONAL else "ack"
    h41.broker.mend("national")
    h41.run(horizon=0.1)
    assert len(h41.queue(TO_NATIONAL)) == 3 and h41.queue(OUT_NATIONAL) == []
    h41.broker.cut("national")
    h41.run()
    assert len(h41.queue(OUT_NATIONAL)) == 3
    h41.broker.confirming = lambda _q, _m: "ack"
    h41.broker.mend("national")
    h41.run()
    assert h41.queue(OUT_NATIONAL) == [] and h41.unsettled() == 0
    ids = [m.message_id for m in h41.queue(TO_NATIONAL)]
    assert sorted(ids) == sorted(2 * [wire.message_id(b) for b in bodies])


def test_a_forward_the_neighbour_refuses_is_tried_again_after_a_pause(h41: Hub) -> None:
    """The national broker nacks the first forward (its queue full, say): the copy goes back to
    out.national and is forwarded again after a pause, not in a tight loop."""
    refused: list[float] = []
    h41.broker.cut("national")
    w = h41.worker()
    h41.hand_in(_doc(h41))
    h41.run()

    def nack_first(queue: str, _m: Outgoing) -> str:
        if queue == TO_NATIONAL and not refused:
            refused.append(w.session.loop.now)  # type: ignore[union-attr]
            return "nack"
        return "ack"

    h41.broker.confirming = nack_first  # type: ignore[assignment]
    h41.broker.mend("national")
    h41.run()
    assert len(refused) == 1 and len(h41.queue(TO_NATIONAL)) == 1  # the refused one landed nowhere
    assert w.session.loop.now - refused[0] >= 0.5, "tried again at once"  # type: ignore[union-attr]
    assert h41.queue(OUT_NATIONAL) == [] and h41.unsettled() == 0


class Exploding(Hook):
    """A hook that fails at every moment."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__"):
            return object.__getattribute__(self, name)

        def boom(*_: Any) -> None:
            raise RuntimeError(f"hook broken at {name}")
        return boom


def test_a_faulty_hook_does_not_stop_a_delivery(dev_pki: Path, topology: Topology, tmp_path: Path) -> None:
    """Metrics, logs and alerts are hooks: one that raises at every moment is logged, and the
    document still goes through."""
    hub = Hub(dev_pki, topology, "H41", tmp_path, extra_hooks=(Exploding(),))
    try:
        with capture_logs() as logs:
            hub.worker()
            body = _doc(hub)
            hub.hand_in(body)
            hub.run()
        assert [m.body for m in hub.queue(TO_NATIONAL)] == [body] and hub.unsettled() == 0
        assert {e["moment"] for e in logs if e["event"] == "hook failed"} >= {"received", "published", "acking"}
    finally:
        hub.close()


def test_a_delivery_moves_only_along_its_life() -> None:
    """The pipeline cannot ack a delivery twice, nor requeue one it acked: such a move is refused."""
    d = Delivery(Received(b"x", "", {}, 1, False), hops.from_agency(b"x", SENDER), 0.0)
    for stage in (Stage.JUDGED, Stage.ADMITTED, Stage.ACKED):
        d.move(stage)
    with pytest.raises(StageError):
        d.move(Stage.REQUEUED)
    with pytest.raises(StageError):
        Delivery(Received(b"x", "", {}, 2, False), hops.from_agency(b"x", SENDER), 0.0).move(Stage.ACKED)


def test_the_worker_needs_no_broker(h41: Hub) -> None:
    """What a session connects names the hub's ingress, its own vhost and each neighbour's, with its
    own two accounts; the in-memory transport takes it as RabbitMQ would."""
    w = h41.worker()
    plan = w.plan()
    assert plan.queue == wire.Q_INGRESS and set(plan.publishers) == {".", "national"}
    assert "amqp-link-cert.pem" in plan.publishers["national"] and "amqp-hub-cert.pem" in plan.consume_url
    assert isinstance(h41.store, SqlStore)


def test_every_moment_reaches_every_hook() -> None:
    """The composite calls each hook at every moment a hook can watch (none forgotten)."""
    import inspect

    from broker.relay.hooks import Hooks

    moments = [name for name, _ in inspect.getmembers(Hook, inspect.isfunction) if not name.startswith("_")]
    heard: list[str] = []

    class Listening(Hook):
        def __getattribute__(self, name: str) -> Any:
            if name in moments:
                return lambda *_: heard.append(name)
            return object.__getattribute__(self, name)

    hooks = Hooks([Listening()], log=None)
    for name in moments:
        getattr(hooks, name)(*[None] * (len(inspect.signature(getattr(Hook, name)).parameters) - 1))
    assert heard == moments and len(moments) >= 12
