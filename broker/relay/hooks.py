"""What watches the hub worker's pipeline without being part of it: metrics, log events, the
``sha1-accepted`` alert, the counts logged at stop, and fault injection for the reliability tests.

Each is a :class:`Hook`: a class of empty methods, one per moment of a delivery's life, overriding
those it needs.  :class:`Hooks` calls every hook in turn, and a hook that raises is logged and
skipped: a faulty hook never stops a delivery.  (Fault injection ends the process on purpose,
with ``os._exit``, which is no exception.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from broker.core.outcome import Verdict
from broker.relay import metrics
from broker.relay.delivery import Delivery
from broker.settings import Fault


class Hook:
    """One concern watching the pipeline; every method does nothing here."""

    def received(self, d: Delivery) -> None:
        """Taken from the ingress."""

    def batched(self, batch: Sequence[Delivery]) -> None:
        """Judged and admitted together."""

    def failed(self, d: Delivery, error: BaseException) -> None:
        """The hop raised (a bug): the delivery is requeued; the queue's delivery limit parks it."""

    def published(self, d: Delivery) -> None:
        """Its new copies were handed to the broker: the hop's outcome took effect."""

    def duplicate(self, d: Delivery, refused: str) -> None:
        """Nothing new to publish: every copy went out before, or (``refused``: its code) an
        earlier refusal of these bytes stands."""

    def confirmed(self, d: Delivery) -> None:
        """The broker confirmed every copy."""

    def unconfirmed(self, d: Delivery) -> None:
        """A copy was refused or lost: the delivery is requeued."""

    def requeued(self, d: Delivery, reason: str) -> None:
        """Handed back to the broker for a reason no other moment names."""

    def marking(self, batch: Sequence[Delivery]) -> None:
        """Their copies are out; their claims are about to be marked confirmed."""

    def marks_failed(self, batch: Sequence[Delivery], error: BaseException) -> None:
        """The marks could not be written (a redelivery takes the claims over)."""

    def acking(self, batch: Sequence[Delivery]) -> None:
        """About to be acked."""

    def retried(self, d: Delivery, to: str, error: BaseException) -> None:
        """Sent to retry tier ``to`` after a transient failure; ``to`` is ``parking`` when the retries
        ran out."""

    def kept(self, neighbour: str) -> None:
        """A copy for ``neighbour``, whose link is down, was put in its outbound queue."""

    def forwarded(self, neighbour: str) -> None:
        """A copy that waited in ``neighbour``'s outbound queue was confirmed by its broker."""


class Hooks(Hook):
    """Every hook, called in turn; one that raises is logged and the others still run."""

    def __init__(self, hooks: Sequence[Hook], log: Any) -> None:
        self.hooks = tuple(hooks)
        self.log = log

    def _each(self, moment: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, moment)(*args)
            except Exception as exc:  # noqa: BLE001 - a faulty hook never stops a delivery
                self.log.error("hook failed", hook=type(hook).__name__, moment=moment, error=repr(exc))

    def received(self, d: Delivery) -> None:
        self._each("received", d)

    def batched(self, batch: Sequence[Delivery]) -> None:
        self._each("batched", batch)

    def failed(self, d: Delivery, error: BaseException) -> None:
        self._each("failed", d, error)

    def published(self, d: Delivery) -> None:
        self._each("published", d)

    def duplicate(self, d: Delivery, refused: str) -> None:
        self._each("duplicate", d, refused)

    def confirmed(self, d: Delivery) -> None:
        self._each("confirmed", d)

    def unconfirmed(self, d: Delivery) -> None:
        self._each("unconfirmed", d)

    def requeued(self, d: Delivery, reason: str) -> None:
        self._each("requeued", d, reason)

    def marking(self, batch: Sequence[Delivery]) -> None:
        self._each("marking", batch)

    def marks_failed(self, batch: Sequence[Delivery], error: BaseException) -> None:
        self._each("marks_failed", batch, error)

    def acking(self, batch: Sequence[Delivery]) -> None:
        self._each("acking", batch)

    def retried(self, d: Delivery, to: str, error: BaseException) -> None:
        self._each("retried", d, to, error)

    def kept(self, neighbour: str) -> None:
        self._each("kept", neighbour)

    def forwarded(self, neighbour: str) -> None:
        self._each("forwarded", neighbour)


class Metrics(Hook):
    """The Prometheus metrics of :mod:`broker.relay.metrics`."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self._batch = metrics.BATCH_SIZE.labels(hub)
        self._hop = metrics.HOP_SECONDS.labels(hub)

    def batched(self, batch: Sequence[Delivery]) -> None:
        self._batch.observe(len(batch))

    def published(self, d: Delivery) -> None:
        o = d.judged
        metrics.MESSAGES.labels(self.hub, o.verdict, o.code).inc()
        if o.legacy and o.verdict != Verdict.REJECTED:
            metrics.SHA1_ACCEPTED.labels(self.hub, o.sender).inc()

    def duplicate(self, d: Delivery, refused: str) -> None:
        if not refused:
            metrics.MESSAGES.labels(self.hub, "duplicate", "").inc()

    def confirmed(self, d: Delivery) -> None:
        self._hop.observe(time.perf_counter() - d.arrived)  # the wait for its batch included

    def retried(self, d: Delivery, to: str, error: BaseException) -> None:
        metrics.RETRIES.labels(self.hub, to).inc()

    def kept(self, neighbour: str) -> None:
        metrics.OUTBOUND.labels(self.hub, neighbour, "kept").inc()

    def forwarded(self, neighbour: str) -> None:
        metrics.OUTBOUND.labels(self.hub, neighbour, "forwarded").inc()


class Events(Hook):
    """The worker's log events about deliveries, and the ``sha1-accepted`` alert."""

    def __init__(self, log: Any) -> None:
        self.log = log

    def failed(self, d: Delivery, error: BaseException) -> None:
        self.log.error("hop failed", error=repr(error))

    def published(self, d: Delivery) -> None:
        o = d.judged
        if o.legacy and o.verdict != Verdict.REJECTED:
            # accepted only because the directory allows this agency SHA-1: someone must see it
            self.log.warning("alert", kind="sha1-accepted", agency=o.sender, document_id=o.document_id,
                             detail="; ".join(o.legacy))
        if o.verdict == Verdict.REJECTED:
            self.log.info("rejected", document_id=o.document_id, agency=o.sender, code=o.code, reason=o.reason)

    def duplicate(self, d: Delivery, refused: str) -> None:
        o = d.judged
        if refused:  # the same bytes failed here before: they keep that failure, never a positive receipt
            self.log.info("duplicate of a rejected message", document_id=o.document_id, agency=o.sender,
                          code=refused)
        else:
            self.log.info("duplicate suppressed", document_id=o.document_id, agency=o.sender)

    def unconfirmed(self, d: Delivery) -> None:
        self.log.warning("publish not confirmed; message requeued", document_id=d.judged.document_id)

    def requeued(self, d: Delivery, reason: str) -> None:
        self.log.warning("requeued", reason=reason)

    def marks_failed(self, batch: Sequence[Delivery], error: BaseException) -> None:
        self.log.warning("could not confirm claims", error=str(error), messages=len(batch))

    def acking(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            if d.outcome is not None:
                self.log.debug(d.outcome.verdict, document_id=d.outcome.document_id, agency=d.outcome.sender)

    def retried(self, d: Delivery, to: str, error: BaseException) -> None:
        self.log.warning("transient failure", error=str(error), to=to)


class Stats(Hook):
    """A worker's counts since it started (logged when it stops)."""

    KEYS = ("received", "forwarded", "delivered", "rejected", "duplicates", "retried", "parked")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(self.KEYS, 0)
        self.by_code: dict[str, int] = {}

    def received(self, d: Delivery) -> None:
        self.counts["received"] += 1

    def published(self, d: Delivery) -> None:
        o = d.judged
        if o.verdict == Verdict.REJECTED:
            self.counts["rejected"] += 1
            self.by_code[o.code] = self.by_code.get(o.code, 0) + 1
        else:
            self.counts["delivered" if o.verdict == Verdict.DELIVERED else "forwarded"] += 1

    def duplicate(self, d: Delivery, refused: str) -> None:
        self.counts["duplicates"] += 1

    def retried(self, d: Delivery, to: str, error: BaseException) -> None:
        self.counts["parked" if to == "parking" else "retried"] += 1


class Faults(Hook):
    """Fault injection (``LIENTHONG_FAULT``): the process dies at a named moment.
    ``after-publish``: the broker confirmed the copies, their claims are not yet marked;
    ``before-ack``: the claims are marked, the delivery not yet acked."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    def marking(self, batch: Sequence[Delivery]) -> None:
        self.fault.maybe_die("after-publish")

    def acking(self, batch: Sequence[Delivery]) -> None:
        self.fault.maybe_die("before-ack")
