"""The queue watch of a hub worker: every so often, queue depths as gauges, and an ``alert`` log
event when a threshold (``settings.alerts``) is crossed, ``alert cleared`` when it no longer holds.
Its own connection and thread, so a slow broker answer never stalls the message loop."""

from __future__ import annotations

import threading

import structlog

from broker.core import wire
from broker.core.errors import LienthongError
from broker.core.topology import Topology
from broker.relay import metrics, transport


class QueueWatch:
    def __init__(self, hub: str, topology: Topology, url: str, every_seconds: float,
                 stopped: threading.Event) -> None:
        self.hub, self.url, self.every, self.stopped = hub, url, every_seconds, stopped
        self.limits = metrics.Thresholds.from_settings(topology.settings)
        self.queues = [wire.Q_INGRESS, wire.Q_PARKING] + sorted(
            wire.inbox_queue(a.organ_id) for a in topology.agencies.values() if a.hub == hub)
        self.log = structlog.get_logger("lienthong.watch").bind(hub=hub)

    def run(self) -> None:
        """Watch until ``stopped`` is set."""
        active: set[tuple[str, str]] = set()
        while True:
            try:
                depths = transport.depths(self.url, self.queues)
            except LienthongError as exc:
                self.log.debug("queue watch skipped", error=str(exc))
            else:
                now = {(kind, subject): what
                       for kind, subject, what in metrics.queue_alerts(self.hub, depths, self.limits)}
                for kind, subject in sorted(now.keys() - active):
                    self.log.warning("alert", kind=kind, subject=subject, detail=now[(kind, subject)])
                for kind, subject in sorted(active - now.keys()):
                    self.log.info("alert cleared", kind=kind, subject=subject)
                active = set(now)
            if self.stopped.wait(self.every):
                return
