"""The queue watch of a hub worker: every so often, queue depths as gauges, and an ``alert`` log
event when a threshold (``settings.alerts``) is crossed, ``alert cleared`` when it has not held
for two checks in a row.
Its own connection and thread, so a slow broker answer never stalls the message loop."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import structlog

from broker.core import wire
from broker.core.errors import LienthongError
from broker.core.topology import Topology
from broker.relay import metrics
from broker.relay.amqp import blocking

CLEAR_AFTER = 2
"""Checks in a row without an alert before it is cleared.  A queue's count of ready messages dips
for a moment when ``lienthong status`` looks at its head (a get, then a requeue), or when one
passive declare fails; an alert must not be cleared and raised again by that."""


class Raised:
    """The queue alerts raised and not yet cleared, from one check to the next."""

    def __init__(self) -> None:
        self._missed: dict[tuple[str, str], int] = {}
        """(kind, subject) of each alert that holds -> checks in a row that did not see it."""

    def update(self, seen: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The alerts one check saw: returns those raised now (not held before) and those cleared
        (unseen for :data:`CLEAR_AFTER` checks)."""
        now = set(seen)
        raised = sorted(now - self._missed.keys())
        for key in self._missed.keys() - now:
            self._missed[key] += 1
        cleared = sorted(k for k, missed in self._missed.items() if missed >= CLEAR_AFTER)
        for key in cleared:
            del self._missed[key]
        self._missed.update((key, 0) for key in now)
        return raised, cleared


class QueueWatch:
    def __init__(self, hub: str, topology: Topology, url: str, every_seconds: float,
                 stopped: threading.Event) -> None:
        self.hub, self.url, self.every, self.stopped = hub, url, every_seconds, stopped
        self.use(topology)
        self.log = structlog.get_logger("lienthong.watch").bind(hub=hub)

    def use(self, topology: Topology) -> None:
        """Watch the queues of ``topology`` from the next check on (a new directory in force)."""
        self.limits = topology.settings.alerts
        self.queues = [wire.Q_INGRESS, wire.Q_PARKING] + sorted(
            wire.inbox_queue(a.organ_id) for a in topology.agencies.values() if a.hub == self.hub) + sorted(
            wire.outbound_queue(n) for n in topology.neighbours(self.hub))  # what waits for a broker away

    def run(self) -> None:
        """Watch until ``stopped`` is set."""
        alerts = Raised()
        while True:
            try:
                depths = blocking.depths(self.url, self.queues)
                waiting = [q for q, n in depths.items() if n and q.startswith("inbox.")]  # no delivery limit there
                ages = blocking.head_ages(self.url, waiting) if waiting else {}
            except LienthongError as exc:
                self.log.debug("queue watch skipped", error=str(exc))
            else:
                now = {(kind, subject): what
                       for kind, subject, what in metrics.queue_alerts(self.hub, depths, self.limits, ages)}
                raised, cleared = alerts.update(now)
                for kind, subject in raised:
                    self.log.warning("alert", kind=kind, subject=subject, detail=now[(kind, subject)])
                for kind, subject in cleared:
                    self.log.info("alert cleared", kind=kind, subject=subject)
            if self.stopped.wait(self.every):
                return
