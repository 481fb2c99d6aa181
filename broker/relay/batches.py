"""How a hub worker groups its deliveries into batches, each judged and admitted together."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from broker.core import wire
from broker.relay import metrics
from broker.relay.transport import Received

ENTRY_BATCH_MAX = 32
"""Documents handed in by agencies that, once waiting together, are judged at once."""


class Batches:
    """The deliveries of one I/O loop turn make one batch: one store transaction, one burst of
    publishes, one ``multiple`` ack (:meth:`broker.relay.worker.HubWorker._handle_arrived`).

    Under load, a batch whose first delivery an agency handed in (its entry exchange
    ``in.<agency>``) waits up to ``seconds`` for more, or until :data:`ENTRY_BATCH_MAX` wait:
    agencies' documents come one at a time, and each batch of one costs this hub, every hub after
    it and the broker at each queue the same turn's work as a full one (``bench/relay_throughput.py``
    shows what gathering saves against ``no-gather``).  "Under load": the agency document before
    it arrived less than ``seconds`` earlier; a document that comes alone is judged at once, so
    a trickle of documents waits for nothing.  A document waits at most once, at its entry hub: a
    delivery from a hub, the retry tier or anything else ends the wait, since a neighbour's
    forwarded documents already come in the bursts of its own batches.  ``seconds`` 0: no wait."""

    def __init__(self, hub: str, handle: Callable[[list[tuple[Received, float]]], None], seconds: float) -> None:
        """``handle`` gets each batch: the deliveries with the ``time.perf_counter()`` of their arrival."""
        self._handle = handle
        self.seconds = seconds
        self._size = metrics.BATCH_SIZE.labels(hub)
        self._ioloop: Any = None
        self._waiting: list[tuple[Received, float]] = []
        self._timer: Any = None
        self._last_agency = float("-inf")
        """When the last delivery an agency handed in arrived."""

    def reset(self, ioloop: Any) -> None:
        """A new session on ``ioloop``.  Deliveries still waiting from the last one were never acked:
        they went back to the queue with its connection."""
        self._ioloop, self._waiting, self._timer = ioloop, [], None

    def drop(self) -> None:
        """The session ends: nothing waiting is handled (unacked, the broker hands it out again)."""
        if self._timer is not None and self._ioloop is not None:
            self._ioloop.remove_timeout(self._timer)
        self._waiting, self._timer = [], None

    def add(self, d: Received) -> None:
        """pika hands over each delivery as it reads it."""
        now = time.perf_counter()
        self._waiting.append((d, now))
        if self._ioloop is None:
            return
        waits = False
        if self.seconds > 0 and wire.origin_of(d.exchange).startswith("agency:"):
            waits, self._last_agency = now - self._last_agency < self.seconds, now
        if len(self._waiting) == 1:
            if waits:
                self._timer = self._ioloop.call_later(self.seconds, self._flush)
            else:
                self._ioloop.add_callback(self._flush)
        elif self._timer is not None and (not waits or len(self._waiting) >= ENTRY_BATCH_MAX):
            self._ioloop.remove_timeout(self._timer)
            self._timer = None
            self._ioloop.add_callback(self._flush)

    def _flush(self) -> None:
        batch, self._waiting, self._timer = self._waiting, [], None
        if batch:
            self._size.observe(len(batch))
            self._handle(batch)
