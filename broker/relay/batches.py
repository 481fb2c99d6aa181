"""How a hub worker groups its deliveries into batches, each judged and admitted together."""

from __future__ import annotations

from collections.abc import Callable

from broker.relay.delivery import Delivery
from broker.relay.transport import Loop

ENTRY_BATCH_MAX = 32
"""Documents handed in by agencies that, once waiting together, are judged at once."""


class Batches:
    """The deliveries of one loop turn make one batch: one store transaction, one burst of
    publishes, one ``multiple`` ack (:meth:`broker.relay.pipeline.Pipeline._handle`).

    Under load, a batch whose first delivery an agency handed in (its entry exchange
    ``in.<agency>``) waits up to ``seconds`` for more, or until :data:`ENTRY_BATCH_MAX` wait:
    agencies' documents come one at a time, and each batch of one costs this hub, every hub after
    it and the broker at each queue the same turn's work as a full one (``bench/relay_throughput.py``
    shows what gathering saves against ``no-gather``).  "Under load": the agency document before
    it arrived less than ``seconds`` earlier; a document that comes alone is judged at once, so
    a trickle of documents waits for nothing.  A document waits at most once, at its entry hub: a
    delivery from a hub, the retry tier or anything else ends the wait, since a neighbour's
    forwarded documents already come in the bursts of its own batches.  ``seconds`` 0: no wait."""

    def __init__(self, handle: Callable[[list[Delivery]], None], seconds: float) -> None:
        self._handle = handle
        self.seconds = seconds
        self._loop: Loop | None = None
        self._waiting: list[Delivery] = []
        self._timer: object | None = None
        self._last_agency = float("-inf")
        """When the last delivery an agency handed in arrived."""

    def reset(self, loop: Loop) -> None:
        """A new session on ``loop``.  Deliveries still waiting from the last one were never acked:
        they went back to the queue with its connection."""
        self._loop, self._waiting, self._timer = loop, [], None

    def drop(self) -> None:
        """The session ends: nothing waiting is handled (unacked, the broker hands it out again)."""
        if self._timer is not None and self._loop is not None:
            self._loop.cancel(self._timer)
        self._waiting, self._timer = [], None

    def add(self, d: Delivery) -> None:
        self._waiting.append(d)
        if self._loop is None:
            return
        waits = False
        if self.seconds > 0 and d.origin.startswith("agency:"):
            waits, self._last_agency = d.arrived - self._last_agency < self.seconds, d.arrived
        if len(self._waiting) == 1:
            if waits:
                self._timer = self._loop.call_later(self.seconds, self._flush)
            else:
                self._loop.call_soon(self._flush)
        elif self._timer is not None and (not waits or len(self._waiting) >= ENTRY_BATCH_MAX):
            self._loop.cancel(self._timer)
            self._timer = None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._waiting, self._timer = self._waiting, [], None
        if batch:
            self._handle(batch)
