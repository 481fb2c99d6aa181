"""The hub worker: consume the ingress, run the hop, publish with confirms, ack.

One process, one thread, one pika IOLoop carrying every connection: the
ingress consumer, a publisher into the hub's own vhost (inboxes, parking,
retry) and one publisher per neighbouring hub (with the link account,
which may only publish to that hub's ingress).  CPU work (verification) runs
inline: on this GIL-bound runtime a second thread would only add
hand-offs.  Scale out with more worker processes: they compete on the
ingress queue and coordinate through the state store's claims.

Per message: ``Hop.process`` -> claim every copy in the store -> publish the
copies that are new -> when the broker has confirmed all of them, mark the
claims confirmed and ack the inbound delivery.  A transient failure sends the
message to the next retry tier (fixed-TTL queues back into the ingress);
after the last tier it is parked with ``RETRY_EXHAUSTED``.  Any lost
connection tears the session down and the loop reconnects with back-off;
unacked messages come back and the claims make the second pass idempotent.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from broker.core import wire
from broker.core.errors import DocumentIdReused, RetriesExhausted, TransientError
from broker.core.hop import PARKING, Copy, Hop, Inbound, Outcome
from broker.core.routing import Target
from broker.core.topology import Topology
from broker.core.wire import H_ATTEMPT, H_CODE, H_HUB, H_ORIGIN, H_REASON, H_REPLAY, trusted_headers
from broker.relay import checkpoints, layout, links, metrics, transport
from broker.relay.batches import Batches
from broker.relay.held import HeldReceipts
from broker.relay.metrics import Stats
from broker.relay.revocation import CrlFetcher
from broker.relay.store import Admission, Admit, SqlStore, Verdict
from broker.relay.watch import QueueWatch
from broker.settings import Fault, PkiLayout, Tuning

log = structlog.get_logger("lienthong.worker")

MARK_DELAY = 0.01
"""Seconds a message whose copies the broker confirmed may wait for its claims to be marked (and
for its ack): under load the next admission carries the marks in its own transaction, so marking
costs no transaction of its own.  The copies are out already, so no document waits for this; a
worker killed in that window leaves claims a redelivery takes over (a twin, which recipients drop
by message id), so the window is kept short."""


@dataclass(frozen=True)
class _Judged:
    """A delivery the hop has judged, waiting for the store to admit it."""

    delivery: transport.Received
    headers: dict[str, Any]
    inbound: Inbound
    outcome: Outcome
    admit: Admit
    reserved: set[tuple[str, str]]
    """The (digest, claim) keys held in ``_in_flight`` until the claims are known."""


class HubWorker:
    def __init__(self, hub_id: str, topology: Topology, hop: Hop, store: SqlStore, keys: PkiLayout,
                 *, prefetch: int = 256, tuning: Tuning | None = None) -> None:
        self.hub = hub_id
        self.topology = topology
        self.hop = hop
        self.store = store
        self.keys = keys  # the hub's own material: its two broker accounts and the broker's CA
        self.prefetch = prefetch
        self.owner = f"{hub_id}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.stats = Stats()
        self._stopping = False
        self._stopped = threading.Event()
        self._ioloop: Any = None
        self._links: dict[str, links.Link] = {}
        self._consumer: links.Consumer | None = None
        self._in_flight: set[tuple[str, str]] = set()
        self._started: dict[int, float] = {}
        self._confirmed: list[tuple[int, Outcome, list[str]]] = []
        self.tuning = tuning or Tuning()
        self._held = HeldReceipts(hop.bundle, self._send, self.tuning.receipt_hold_seconds)
        self._batches = Batches(hub_id, self._handle_arrived, self.tuning.entry_batch_seconds)
        self._fault = Fault.parse(self.tuning.fault)
        self._witnessed_seq = 0
        self.log = log.bind(hub=hub_id)
        self.names = wire.names(topology)

    # -- life cycle ------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; reconnect with back-off whenever a connection drops."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        watch = QueueWatch(self.hub, self.topology, self._url(self.hub, "hub"),
                           self.tuning.watch_seconds, self._stopped)
        threading.Thread(target=watch.run, name="queue-watch", daemon=True).start()
        if self.tuning.crl_fetch_seconds > 0 and self.hop.trust.crl_cache is not None:
            configured = (self.topology.settings.get("revocation") or {}).get("crl_urls") or []
            fetcher = CrlFetcher(self.hop.trust, self.hop.trust.crl_cache, [str(u) for u in configured],
                                 self.tuning.crl_fetch_seconds, self._stopped)
            threading.Thread(target=fetcher.run, name="crl-fetch", daemon=True).start()
        backoff = 0.5
        while not self._stopping:
            started = time.monotonic()
            try:
                self._session()
            except Exception as exc:  # noqa: BLE001 - a worker must outlive any one failure
                self.log.error("session failed", error=repr(exc))
            if self._stopping:
                break
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 15.0)
            self.log.warning("reconnecting", in_seconds=backoff)
            time.sleep(backoff)
        try:
            checkpoints.checkpoint(self.store, self.hub, self.hop.key)
        except TransientError as exc:
            self.log.warning("final audit checkpoint failed", error=str(exc))
        self.store.close()
        self.log.info("stopped", **{k: v for k, v in vars(self.stats).items() if k != "by_code"})

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        if self._ioloop is not None:
            self._ioloop.add_callback_threadsafe(self._teardown)

    def _url(self, broker_of: str, role: str) -> str:
        """This hub's ``role`` account ("hub": its own vhost; "link": a neighbour's) on the broker
        of ``broker_of``, over TLS with the account's client certificate."""
        return layout.account_url(self.topology, broker_of, self.keys.hub_account(self.hub, role),
                                  self.keys.broker_ca)

    def _session(self) -> None:
        self._ioloop = links.new_ioloop()
        self._in_flight.clear()
        self._started.clear()
        self._confirmed = []
        self._held.reset(self._ioloop)
        self._batches.reset(self._ioloop)
        self._links = {}
        own = self._url(self.hub, "hub")
        self._links["."] = links.Link("local", own, self._ioloop, self._ready, self._lost)
        for n in self.topology.neighbours(self.hub):
            self._links[n] = links.Link(f"link:{n}", self._url(n, "link"), self._ioloop, self._ready, self._lost)
        self._consumer = links.Consumer(own, wire.Q_INGRESS, self.prefetch, self._ioloop,
                                        self._batches.add, self._ready, self._lost)
        self._ioloop.call_later(self.tuning.checkpoint_seconds, self._checkpoint)
        self._alerts()
        self._ioloop.start()
        self._ioloop.close()
        self._ioloop = None

    def _checkpoint(self) -> None:
        """Sign the head of the audit log and raise trust alerts, then again every self.tuning.checkpoint_seconds."""
        self._alerts()
        try:
            head = checkpoints.checkpoint(self.store, self.hub, self.hop.key)
            if head and head[0] != self._witnessed_seq:
                self.log.debug("audit checkpoint", seq=head[0])
                checkpoints.hand_to_neighbours(self._links, self.topology, self.hub, head[0], head[2], self.log)
                self._witnessed_seq = head[0]
                tsa = (self.topology.settings.get("audit") or {}).get("tsa_url")
                if tsa:  # its own thread: an authority's answer must not hold the message loop
                    threading.Thread(target=checkpoints.time_stamp, name="time-stamp", daemon=True,
                                     args=(self.store, self.hub, str(tsa), head[0], head[2], self.log)).start()
        except TransientError as exc:
            self.log.warning("audit checkpoint failed", error=str(exc))
        if self._ioloop is not None and not self._stopping:
            self._ioloop.call_later(self.tuning.checkpoint_seconds, self._checkpoint)

    def _alerts(self) -> None:
        for kind, sentence in metrics.trust_alerts(self.hub, self.hop.key.cert, self.hop.trust):
            self.log.warning("alert", kind=kind, detail=sentence)

    def _ready(self, _what: object) -> None:
        if self._consumer is not None and self._consumer.ready and all(link.ready for link in self._links.values()):
            self.log.info("serving", links=sorted(k for k in self._links if k != "."))
            self._consumer.start()

    def _lost(self, what: object, why: str) -> None:
        if not self._stopping:
            self.log.warning("connection lost", what=getattr(what, "name", type(what).__name__), why=why)
        self._teardown()

    def _teardown(self) -> None:
        self._batches.drop()
        self._held.flush()  # a stop does not wait out the hold (lost links refuse them: requeued)
        self._flush_confirmed()  # marks of copies already out: a redelivery then finds them done
        if self._consumer is not None:
            self._consumer.close()
        for link in self._links.values():
            link.close()
        if self._ioloop is not None:
            # let the closes flush, then leave the loop
            self._ioloop.call_later(0.2, self._ioloop.stop)

    # -- one message -------------------------------------------------------------------

    def _handle_arrived(self, batch: list[tuple[transport.Received, float]]) -> None:
        """Judge a batch of deliveries (:class:`Batches`), then admit them in one transaction that
        also marks the claims of the messages confirmed since the last one (acked after it)."""
        judged = [j for d, arrived in batch if (j := self._judge(d, arrived)) is not None]
        carried, self._confirmed = self._confirmed, []
        if not judged and not carried:
            return
        if carried:
            self._fault.maybe_die("after-publish")
        try:
            admissions = self.store.admit([j.admit for j in judged], confirmed=self._marks(carried))
        except TransientError as exc:
            self._confirmed = carried + self._confirmed  # marked (or acked regardless) by the timer
            for j in judged:
                self._in_flight.difference_update(j.reserved)
                self._retry(j.delivery, j.headers, exc)
            return
        self._acked(carried)
        for j, admission in zip(judged, admissions, strict=True):
            self._act(j, admission)
        self._held.settle()

    def _judge(self, d: transport.Received, arrived: float) -> _Judged | None:
        """Run the hop on one delivery; None when it needs no store work (it was answered here)."""
        tag = d.delivery_tag
        headers = trusted_headers(d.exchange, d.headers)
        self.stats.received += 1
        self._started[tag] = arrived  # the hop's time (HOP_SECONDS) counts the wait for its batch
        inbound = Inbound(d.body, headers, d.exchange)
        try:
            outcome = self.hop.process(inbound)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the hub; the delivery limit parks it
            self.log.error("hop failed", error=repr(exc))
            self._started.pop(tag, None)
            self._consumer.requeue(tag)  # type: ignore[union-attr]
            return None
        if outcome.verdict == "witnessed":
            self._keep_witness(tag, outcome)
            return None
        if not outcome.exactly_once:  # a receipt on its way: forwarded, claimed where it is delivered
            self.stats.count(self.hub, outcome)
            self._publish_all(tag, outcome, list(outcome.copies), claimed=False)
            return None
        keys = {(outcome.digest, c.claim) for c in outcome.copies}
        if keys & self._in_flight:  # a copy of a message this worker is publishing right now
            self._retry(d, headers, TransientError("the same message is already being published by this worker"))
            return None
        self._in_flight.update(keys)  # reserved until its claims are known (a twin in this batch waits)
        verdict = None
        if outcome.standing:
            verdict = Verdict("rejected" if outcome.verdict == "rejected" else "accepted", outcome.code, outcome.reason)
        admit = Admit(self.hub, outcome.digest, [c.claim for c in outcome.copies], self.owner, outcome.entries,
                      outcome.message, verdict, outcome.document_id, outcome.sender, outcome.identity,
                      afresh=bool(headers.get(H_REPLAY)))  # an operator's deliberate replay is judged afresh
        return _Judged(d, headers, inbound, outcome, admit, keys)

    def _act(self, j: _Judged, admission: Admission) -> None:
        """Publish what the claims say is new; ack what needs nothing more."""
        tag, outcome, claims = j.delivery.delivery_tag, j.outcome, admission.claims
        self._in_flight.difference_update(j.reserved)
        try:
            if claims is None:
                earlier = admission.standing
                assert earlier is not None
                if earlier.code != DocumentIdReused.code:
                    # the same bytes failed here before: they keep that failure, never a positive receipt
                    self.stats.duplicates += 1
                    self.log.info("duplicate of a rejected message", document_id=outcome.document_id,
                                  agency=outcome.sender, code=earlier.code)
                    self._started.pop(tag, None)
                    self._consumer.ack(tag)  # type: ignore[union-attr]
                    return
                # other bytes hold this document's identity: refused (parked, the sender told), even on
                # an operator's replay; a later copy of these bytes finds the refusal's claims done
                outcome = self.hop.refuse(j.inbound, outcome, DocumentIdReused(earlier.reason))
                claims = self.store.claim(self.hub, outcome.digest, [c.claim for c in outcome.copies], self.owner,
                                          outcome.entries, outcome.message)
            if "busy" in claims.values():
                raise TransientError("another worker holds this message")
        except TransientError as exc:
            self._retry(j.delivery, j.headers, exc)
            return
        todo = [c for c in outcome.copies if claims[c.claim] in ("new", "takeover")]
        if not todo:
            self.stats.duplicates += 1
            metrics.MESSAGES.labels(self.hub, "duplicate", "").inc()
            self._started.pop(tag, None)
            self.log.info("duplicate suppressed", document_id=outcome.document_id, agency=outcome.sender)
            self._consumer.ack(tag)  # type: ignore[union-attr]
            return
        self.stats.count(self.hub, outcome)
        if outcome.legacy and outcome.verdict != "rejected":
            # accepted only because the directory allows this agency SHA-1: someone must see it
            metrics.SHA1_ACCEPTED.labels(self.hub, outcome.sender).inc()
            self.log.warning("alert", kind="sha1-accepted", agency=outcome.sender, document_id=outcome.document_id,
                             detail="; ".join(outcome.legacy))
        if outcome.verdict == "rejected":
            self.log.info("rejected", document_id=outcome.document_id, agency=outcome.sender,
                          code=outcome.code, reason=outcome.reason)
        self._publish_all(tag, outcome, todo)

    def _keep_witness(self, tag: int, outcome: Outcome) -> None:
        """Append a witnessed neighbour checkpoint to the audit log once (a redelivery finds it done)."""
        self._started.pop(tag, None)
        try:
            state = self.store.claim(self.hub, outcome.digest, ["witness"], self.owner, outcome.entries)["witness"]
            if state != "done":
                self.store.confirm(self.hub, outcome.digest, ["witness"])
        except TransientError as exc:
            self.log.warning("could not keep a witness", error=str(exc))
            self._consumer.requeue(tag)  # type: ignore[union-attr]
            return
        self._consumer.ack(tag)  # type: ignore[union-attr]

    def _publish_all(self, tag: int, outcome: Outcome, todo: list[Copy], *, claimed: bool = True) -> None:
        """Publish ``todo``; once the broker confirmed every copy, mark their claims (``claimed``) and
        ack the delivery.  While receipts for other hubs' agencies are held (:class:`HeldReceipts`),
        the other copies' claims are marked: a worker killed then leaves only the receipt to resend."""
        keys = [(outcome.digest, c.claim) for c in todo] if claimed else []
        self._in_flight.update(keys)
        held = [c for c in todo if claimed and c.target.kind == "hub" and c.headers.get(wire.H_KIND) == "receipt"]
        direct = [c for c in todo if all(c is not h for h in held)]
        remaining, unsent, failed, early = len(todo), len(direct), False, set[str]()

        def confirmed(ok: bool) -> None:
            nonlocal remaining, failed
            remaining -= 1
            failed = failed or not ok
            if remaining:
                return
            if failed:
                self._in_flight.difference_update(keys)
                self.log.warning("publish not confirmed; message requeued", document_id=outcome.document_id)
                self._started.pop(tag, None)
                if self._consumer is not None:
                    self._consumer.requeue(tag)
                return
            started = self._started.pop(tag, None)
            if started is not None:
                metrics.HOP_SECONDS.labels(self.hub).observe(time.perf_counter() - started)
            self._to_mark((tag, outcome, [c.claim for c in todo if c.claim not in early] if claimed else []))

        def sent(ok: bool) -> None:
            nonlocal unsent
            unsent -= 1
            confirmed(ok)
            if not unsent and remaining and not failed:  # only held receipts left: mark the rest now
                early.update(c.claim for c in direct)
                self._to_mark((0, outcome, sorted(early)))

        for copy in held:
            self._held.add(copy, confirmed)  # issued here: leaves bundled
        for copy in direct:
            self._send(copy, "" if copy.headers.get(wire.H_KIND) == "receipt" else outcome.digest, sent)

    def _to_mark(self, entry: tuple[int, Outcome, list[str]]) -> None:
        """Mark the claims, then ack the tag (0: none), with the next admission or after :data:`MARK_DELAY`."""
        self._confirmed.append(entry)
        if len(self._confirmed) == 1 and self._ioloop is not None:
            self._ioloop.call_later(MARK_DELAY, self._flush_confirmed)

    def _send(self, copy: Copy, message_id: str, confirmed: Callable[[bool], None]) -> None:
        link, exchange, key, user = self._route(copy.target)
        link.publish(exchange, key, copy.body, transport.props(message_id=message_id or wire.message_id(copy.body),
                                                               user_id=user, headers=copy.headers), confirmed)

    def _flush_confirmed(self) -> None:
        """:data:`MARK_DELAY` after a message's copies were confirmed, if no admission carried its
        claims meanwhile: mark them confirmed in one transaction, then ack.

        A message stays in ``_in_flight`` until then: a copy of it arriving meanwhile would find
        its claims still pending under this worker's name and publish it again."""
        batch, self._confirmed = self._confirmed, []
        if not batch:
            return
        self._fault.maybe_die("after-publish")
        try:
            if marks := self._marks(batch):
                self.store.confirm_many(marks)
        except TransientError as exc:
            # the copies are out; the claims stay pending and the redelivery takes them over
            self.log.warning("could not confirm claims", error=str(exc), messages=len(batch))
        self._acked(batch)

    def _marks(self, batch: list[tuple[int, Outcome, list[str]]]) -> list[tuple[str, str, list[str]]]:
        return [(self.hub, o.digest, claims) for _, o, claims in batch if claims]

    def _acked(self, batch: list[tuple[int, Outcome, list[str]]]) -> None:
        """Ack messages whose copies are out and whose claims are marked."""
        self._in_flight.difference_update((o.digest, c) for _, o, claims in batch for c in claims)
        if tags := [tag for tag, _, _ in batch if tag]:  # tag 0: marked while its receipts are held
            self._fault.maybe_die("before-ack")
            if self._consumer is not None:
                self._consumer.ack_all(tags)
        for _, outcome, claims in batch:
            self.log.debug(outcome.verdict, document_id=outcome.document_id, agency=outcome.sender,
                           targets=claims)

    def _route(self, target: Target) -> tuple[links.Link, str, str, str]:
        if target.kind == "hub":
            return self._links[target.name], wire.link_exchange(self.hub), "", self.names.link_user(self.hub)
        if target.kind == "inbox":
            return self._links["."], wire.EX_INBOX, target.name, self.names.hub_user(self.hub)
        assert target == PARKING
        return self._links["."], wire.EX_PARKING, "", self.names.hub_user(self.hub)

    def _retry(self, d: transport.Received, headers: dict[str, Any], exc: TransientError) -> None:
        tag, exchange_in, body = d.delivery_tag, d.exchange, d.body
        self._started.pop(tag, None)
        attempt = int(headers.get(H_ATTEMPT, 0))
        origin = headers.get(H_ORIGIN) if exchange_in == wire.EX_INGRESS else wire.origin_of(exchange_in)
        keep = {k: v for k, v in headers.items() if not k.startswith("x-")}
        keep[H_ORIGIN] = origin or ""
        local = self._links["."]
        tiers = layout.retry_tiers(self.topology)
        if attempt >= len(tiers):
            keep.update({H_CODE: RetriesExhausted.code, H_REASON: str(exc), H_HUB: self.hub})
            exchange, key = wire.EX_PARKING, ""
            self.stats.parked += 1
            metrics.RETRIES.labels(self.hub, "parking").inc()
        else:
            keep[H_ATTEMPT] = attempt + 1
            exchange, key = wire.EX_RETRY, tiers[attempt][0]
            self.stats.retried += 1
            metrics.RETRIES.labels(self.hub, key).inc()
        self.log.warning("transient failure", error=str(exc), attempt=attempt, to=exchange)

        def confirmed(ok: bool) -> None:
            if self._consumer is None:
                return
            (self._consumer.ack if ok else self._consumer.requeue)(tag)

        local.publish(exchange, key, body, transport.props(message_id=d.message_id or wire.message_id(body),
                                                          user_id=self.names.hub_user(self.hub), headers=keep),
                      confirmed)

