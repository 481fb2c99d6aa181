"""The hub worker's pipeline: each delivery taken from the ingress goes through named stages until
it is acked or handed back (:mod:`broker.relay.delivery` draws its life).

1. **receive** (:meth:`Pipeline.receive`): deliveries gather into batches (:mod:`.batches`);
2. **judge** (:meth:`Pipeline._judge`): the hop decides (:meth:`broker.core.hop.Hop.process`);
3. **admit** (:meth:`Pipeline._admit`): one store transaction records every verdict of the batch and
   claims every copy; claims make publishing idempotent across redeliveries and workers;
4. **publish** (:meth:`Pipeline._publish`): what the claims say is new goes to the broker; receipts
   for other hubs' agencies wait a moment to leave as bundles (:mod:`.held`);
5. **confirm** (:meth:`Pipeline._confirmed`): the broker confirms each copy;
6. **mark** (:meth:`Pipeline._mark`): the claims are marked confirmed, with the next admission or
   :data:`MARK_DELAY` later;
7. **ack** (:meth:`Pipeline._ack`).

A transient failure sends the delivery to a retry tier; when the tiers are spent it is refused
like any other refusal (:meth:`Pipeline._retry`, :mod:`.retry`).  What watches the pipeline
(metrics, logs, alerts, fault injection) is a hook (:mod:`.hooks`).  It talks to the broker only
through :mod:`.transport`: the AMQP session in production, an in-memory one in tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from broker.core import wire
from broker.core.errors import DocumentIdReused, RetriesExhausted, StatusReused, TransientError
from broker.core.hop import Hop
from broker.core.hoprecords import RecordBatch
from broker.core.outcome import Copy, Inbound, Outcome, Verdict
from broker.core.routing import Target, TargetKind
from broker.core.trust import TrustSource
from broker.i18n import N_
from broker.relay.batches import Batches
from broker.relay.delivery import Delivery, Stage
from broker.relay.directories import Directories
from broker.relay.held import HeldReceipts
from broker.relay.hooks import Hooks
from broker.relay.outbound import Outbound
from broker.relay.retry import Exhausted, RetryPolicy
from broker.relay.store import ACCEPTED, REJECTED, Admit, SqlStore, Standing
from broker.relay.transport import LOCAL, Confirmed, Outgoing, Received, Session

MARK_DELAY = 0.01
"""Seconds a delivery whose copies the broker confirmed may wait for its claims to be marked (and
for its ack): under load the next admission carries the marks in its own transaction, so marking
costs no transaction of its own.  The copies are out already, so no document waits for this; a
worker killed in that window leaves claims a redelivery takes over (a twin, which recipients drop
by message id), so the window is kept short."""

DIRECTORY_KINDS = (wire.Kind.DIRECTORY, wire.Kind.DIRECTORY_VERSION)

@dataclass(frozen=True)
class Addresses:
    """Where each kind of target is published, and as which broker user."""

    hub: str
    names: wire.Names

    def of(self, target: Target) -> tuple[str, str, str, str]:
        """(publisher, exchange, routing key, user id) of ``target``."""
        if target.kind == TargetKind.HUB:
            return target.name, wire.link_exchange(self.hub), "", self.names.link_user(self.hub)
        if target.kind == TargetKind.INBOX:
            return LOCAL, wire.EX_INBOX, target.name, self.names.hub_user(self.hub)
        return LOCAL, wire.EX_PARKING, "", self.names.hub_user(self.hub)


class Pipeline:
    def __init__(self, hop: Hop, store: SqlStore, owner: str, retry: RetryPolicy, hooks: Hooks, *,
                 trust: TrustSource, hold_seconds: float, batch_seconds: float,
                 directories: Directories | None = None, record_batches: bool = True) -> None:
        """``trust``: where the hop's trust store comes from: each batch is judged with the
        snapshot in force when it starts (a new CRL counts from the next batch).  ``directories``:
        the hub's directory in force, which judges the directories the hub is handed.
        ``record_batches``: sign a batch's hop records once (off: each alone, version 1)."""
        self.hop, self.store, self.owner, self.retry, self.hooks = hop, store, owner, retry, hooks
        self.trust = trust
        self.directories = directories
        self.record_batches = record_batches
        self.hub = hop.hub
        self.addresses = Addresses(self.hub, wire.names(hop.topology))
        self.outbound = Outbound(self.hub, self.addresses.names, hooks)
        self.held = HeldReceipts(lambda copies: self.hop.bundle(copies), self._send, hold_seconds)
        self.batches = Batches(self._handle, batch_seconds)
        self.session: Session | None = None
        self._in_flight: set[tuple[str, str]] = set()
        """(digest, claim) of every copy a delivery of this worker is publishing: a twin arriving
        meanwhile would find its claims pending under this worker's name and publish it again."""
        self._marks: list[tuple[Delivery, list[str], bool]] = []
        """Deliveries whose claims to mark, and whether to ack them after."""
        self._mark_timer: object | None = None

    # -- the session ---------------------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """Work over a new session (what the last one held went back to the queue with it)."""
        self.session = session
        self.outbound.attach(session)
        self._in_flight.clear()
        self._marks, self._mark_timer = [], None
        self.held.reset(session.loop)
        self.batches.reset(session.loop)

    def detach(self) -> None:
        """The session ends: waiting deliveries stay unacked (the broker hands them out again), held
        receipts leave now (a lost link refuses them: requeued), copies already out get their
        claims marked, so that their redelivery finds them done."""
        self.batches.drop()
        self.held.flush()
        self._flush_marks()

    # -- 1. receive, 2. judge ------------------------------------------------------------------

    def receive(self, message: Received) -> None:
        if message.exchange == wire.EX_OUTBOUND:  # judged here before: it waited for its neighbour
            self.outbound.forward(message)
            return
        headers = wire.trusted_headers(message.exchange, message.headers)
        d = Delivery(message, Inbound(message.body, headers, message.exchange), time.perf_counter())
        self.hooks.received(d)
        self.batches.add(d)

    def _handle(self, batch: list[Delivery]) -> None:
        """Judge a batch, then admit it in one transaction that also marks the claims of the
        deliveries confirmed since the last one."""
        self.hooks.batched(batch)
        if (trust := self.trust.current()) is not self.hop.trust:
            self.hop = self.hop.with_trust(trust)
        ran: list[tuple[Delivery, Outcome | Exception]]
        try:
            sealing = self.hop.sealing() if self.record_batches else nullcontext(RecordBatch(self.hop.key))
            with sealing as records:  # the batch's hop records: one signature
                ran = [(d, self._run_hop(d)) for d in batch]
        except Exception as exc:  # noqa: BLE001 - the key could not sign (a token pulled out): tried again later
            gone = TransientError(N_("the hub's key could not sign the batch's hop records: {error}"), error=repr(exc))
            ran = [(d, gone) for d in batch]
        judged = [d for d, result in ran if self._judged(d, result, records)]
        carried, self._marks = self._marks, []
        if judged or carried:
            self._admit(judged, carried)
        self.held.settle()

    def use(self, hop: Hop) -> None:
        """Judge with ``hop`` from the next batch on (a new directory in force)."""
        self.hop = hop
        self.addresses = Addresses(self.hub, wire.names(hop.topology))
        self.outbound.names = self.addresses.names

    def _run_hop(self, d: Delivery) -> Outcome | Exception:
        """The hop's decision, or what it raised: nothing else happens while the batch's records
        wait for their signature (:meth:`Hop.sealing`)."""
        try:
            if self.directories is not None and wire.kind_of(d.inbound.headers) in DIRECTORY_KINDS:
                return self.directories.judge(d.inbound, self.hop.topology)
            return self.hop.process(d.inbound)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the hub; the delivery limit parks it
            return exc

    def _judged(self, d: Delivery, result: Outcome | Exception, records: RecordBatch) -> bool:
        """Act on the hop's decision, its records signed; True when the delivery goes on to
        admission (else it was answered here)."""
        if isinstance(result, TransientError):  # a directory that cannot be put in force yet: tried again later
            d.outcome = Outcome(wire.message_id(d.inbound.body), "", Verdict.FORWARDED, ())
            d.move(Stage.JUDGED)
            self._retry(d, result)
            return False
        try:
            outcome = records.resolve(result) if not isinstance(result, Exception) else result
        except Exception as exc:  # noqa: BLE001 - as in _run_hop: this delivery alone is requeued
            outcome = exc
        if isinstance(outcome, Exception):
            self.hooks.failed(d, outcome)
            self._requeue(d)
            return False
        d.outcome = outcome
        d.move(Stage.JUDGED)
        if outcome.verdict == Verdict.WITNESSED:
            self._keep_witness(d)
            return False
        if not outcome.exactly_once:  # a receipt on its way: forwarded, claimed where it is delivered
            self._publish(d, outcome.copies, claimed=False)
            return False
        keys = {(outcome.digest, c.claim) for c in outcome.copies}
        if keys & self._in_flight:  # a copy of a message this worker is publishing right now
            self._retry(d, TransientError(N_("the same message is already being published by this worker")))
            return False
        self._hold(d, keys)  # until its claims are known: a twin in this batch waits
        return True

    # -- 3. admit ------------------------------------------------------------------------------

    def _admit(self, judged: list[Delivery], carried: list[tuple[Delivery, list[str], bool]]) -> None:
        if carried:
            self.hooks.marking([d for d, _, _ in carried])

        def refuse(index: int, standing: Standing) -> Admit:
            d = judged[index]  # other bytes hold its identity: refused (parked, the sender told)
            reused = StatusReused if standing.code == StatusReused.code else DocumentIdReused
            d.outcome = self.hop.refuse(d.inbound, d.judged, reused(standing.reason))
            return self._admission_of(d)

        try:
            admissions = self.store.admit([self._admission_of(d) for d in judged], refuse=refuse,
                                          confirmed=self._marked(carried))
        except TransientError as exc:
            self._marks = carried + self._marks  # marked (or acked regardless) by the timer
            self._schedule_marks()
            for d in judged:
                self._release(d)
                self._retry(d, exc)
            return
        self._acked(carried)
        for d, admission in zip(judged, admissions, strict=True):
            self._release(d)
            d.move(Stage.ADMITTED)
            if admission.claims is None:
                assert admission.standing is not None  # an earlier refusal of these bytes stands
                self.hooks.duplicate(d, admission.standing.code)
                self._ack([d])
                continue
            d.claims = admission.claims
            if "busy" in d.claims.values():
                self._retry(d, TransientError(N_("another worker holds this message")))
                continue
            todo = [c for c in d.judged.copies if d.claims[c.claim] in ("new", "takeover")]
            if not todo:
                self.hooks.duplicate(d, "")
                self._ack([d])
                continue
            self._publish(d, todo)

    def _admission_of(self, d: Delivery) -> Admit:
        o = d.judged
        standing = Standing(REJECTED if o.verdict == Verdict.REJECTED else ACCEPTED, o.code, o.reason)
        return Admit(self.hub, o.digest, [c.claim for c in o.copies], self.owner, o.entries, o.message,
                     standing if o.standing else None, o.document_id, o.sender, o.identity,
                     afresh=bool(d.inbound.headers.get(wire.H_REPLAY)),  # an operator's replay is judged afresh
                     status=o.status)

    def _keep_witness(self, d: Delivery) -> None:
        """Append a witnessed neighbour checkpoint to the audit log once (a redelivery finds it done)."""
        o = d.judged
        try:
            if self.store.claim(self.hub, o.digest, ["witness"], self.owner, o.entries)["witness"] != "done":
                self.store.confirm(self.hub, o.digest, ["witness"])
        except TransientError as exc:
            self.hooks.requeued(d, f"could not keep a witness: {exc}")
            self._requeue(d)
            return
        d.move(Stage.ADMITTED)
        self._ack([d])

    # -- 4. publish, 5. confirm ----------------------------------------------------------------

    def _publish(self, d: Delivery, copies: Sequence[Copy], *, claimed: bool = True) -> None:
        """Hand the copies to the broker.  Receipts this hub issued for other hubs' agencies wait
        to leave in a bundle; once every other copy is confirmed, their claims are marked at once,
        so that a worker killed during the hold leaves only the receipts to send again."""
        d.publishing, d.unconfirmed = tuple(copies), len(copies)
        d.move(Stage.PUBLISHED)
        if claimed:
            self._hold(d, {(d.judged.digest, c.claim) for c in copies})
        else:
            d.claims = None  # nothing to mark
        held = [c for c in copies if claimed and c.bundled]
        direct = [c for c in copies if not (claimed and c.bundled)]
        self.hooks.published(d)
        left = [len(direct)]

        def direct_confirmed(ok: bool) -> None:
            left[0] -= 1
            self._confirmed(d, ok)
            if not left[0] and held and d.stage == Stage.PUBLISHED and not d.failed:  # only held receipts wait
                d.marked.update(c.claim for c in direct)
                self._to_mark(d, sorted(d.marked), ack=False)

        for copy in held:
            self.held.add(copy, lambda ok: self._confirmed(d, ok))
        for copy in direct:
            self._send(copy, d.judged.digest if copy.body is d.inbound.body else "", direct_confirmed)

    def _send(self, copy: Copy, message_id: str, confirmed: Confirmed) -> None:
        """Publish one copy; one for a neighbour whose link is down waits in its outbound queue."""
        publisher, exchange, key, user = self.addresses.of(copy.target)
        assert self.session is not None
        message = Outgoing(exchange, key, copy.body, message_id or wire.message_id(copy.body), user, copy.headers)
        link = self.session.publishers[publisher]
        if publisher != LOCAL and not link.ready:
            self.outbound.put(publisher, message, confirmed)
        else:
            link.publish(message, confirmed)

    def _confirmed(self, d: Delivery, ok: bool) -> None:
        d.unconfirmed -= 1
        d.failed = d.failed or not ok
        if d.unconfirmed or d.done:
            return
        if d.failed:
            self._release(d)
            self.hooks.unconfirmed(d)
            self._requeue(d)
            return
        d.move(Stage.CONFIRMED)
        self.hooks.confirmed(d)
        claims = [c.claim for c in d.publishing if c.claim not in d.marked] if d.claims is not None else []
        self._to_mark(d, claims, ack=True)

    # -- 6. mark, 7. ack -----------------------------------------------------------------------

    def _to_mark(self, d: Delivery, claims: list[str], *, ack: bool) -> None:
        """Mark ``claims``, then ack ``d`` if ``ack``: with the next admission, or :data:`MARK_DELAY` later."""
        self._marks.append((d, claims, ack))
        self._schedule_marks()

    def _schedule_marks(self) -> None:
        if self._marks and self._mark_timer is None and self.session is not None:
            self._mark_timer = self.session.loop.call_later(MARK_DELAY, self._flush_marks)

    def _flush_marks(self) -> None:
        """Mark what waits in one transaction of its own (no admission carried it), then ack."""
        if self._mark_timer is not None and self.session is not None:
            self.session.loop.cancel(self._mark_timer)
        self._mark_timer = None
        batch, self._marks = self._marks, []
        if not batch:
            return
        self._mark(batch)

    def _mark(self, batch: list[tuple[Delivery, list[str], bool]]) -> None:
        self.hooks.marking([d for d, _, _ in batch])
        try:
            if marks := self._marked(batch):
                self.store.confirm_many(marks)
        except TransientError as exc:  # the copies are out; the claims stay pending, a redelivery takes them over
            self.hooks.marks_failed([d for d, _, _ in batch], exc)
        self._acked(batch)

    def _marked(self, batch: list[tuple[Delivery, list[str], bool]]) -> list[tuple[str, str, list[str]]]:
        return [(self.hub, d.judged.digest, claims) for d, claims, _ in batch if claims]

    def _acked(self, batch: list[tuple[Delivery, list[str], bool]]) -> None:
        """The claims of ``batch`` are marked: ack the deliveries that were waiting for it."""
        for d, _, ack in batch:
            if ack and d.stage == Stage.CONFIRMED:
                d.move(Stage.MARKED)
        self._ack([d for d, _, ack in batch if ack and d.stage == Stage.MARKED])

    def _ack(self, batch: list[Delivery]) -> None:
        for d in batch:
            self._release(d)
        if not batch:
            return
        self.hooks.acking(batch)
        for d in batch:
            d.move(Stage.ACKED)
        if self.session is not None:
            self.session.consumer.ack_all([d.tag for d in batch])

    def _requeue(self, d: Delivery) -> None:
        d.move(Stage.REQUEUED)
        if self.session is not None:
            self.session.consumer.requeue(d.tag)

    def _hold(self, d: Delivery, keys: set[tuple[str, str]]) -> None:
        d.holds |= keys
        self._in_flight |= keys

    def _release(self, d: Delivery) -> None:
        self._in_flight -= d.holds
        d.holds = set()

    # -- retries -------------------------------------------------------------------------------

    def _retry(self, d: Delivery, exc: TransientError) -> None:
        """Send ``d`` to its next retry tier; acked once the tier has it.  When the tiers are
        spent, it is refused (``RETRY_EXHAUSTED``): parked with a signed hop record, the sender
        told, claimed once per series of retries (published unclaimed if the store is down)."""
        step = self.retry.next(d.inbound.headers, d.origin)
        if isinstance(step, Exhausted):
            self.hooks.retried(d, "parking", exc)
            d.outcome = self.hop.refuse(d.inbound, d.judged, RetriesExhausted(str(exc)),
                                        occasion=f"#retries:{step.series}")
            try:
                admission = self.store.admit([self._admission_of(d)])[0]
            except TransientError:
                self._publish(d, d.outcome.copies, claimed=False)
                return
            if d.stage == Stage.JUDGED:
                d.move(Stage.ADMITTED)
            d.claims = admission.claims or {}
            todo = [c for c in d.outcome.copies if d.claims.get(c.claim) in ("new", "takeover")]
            if todo:
                self._publish(d, todo)
            else:
                self._ack([d])
            return
        d.move(Stage.RETRIED)
        self.hooks.retried(d, step.tier, exc)
        assert self.session is not None
        body = d.received.body
        self.session.publishers[LOCAL].publish(
            Outgoing(wire.EX_RETRY, step.tier, body, d.received.message_id or wire.message_id(body),
                     self.addresses.names.hub_user(self.hub), step.headers),
            lambda ok: self._retried(d, ok))

    def _retried(self, d: Delivery, ok: bool) -> None:
        if ok:
            self._ack([d])
        else:
            self._requeue(d)
