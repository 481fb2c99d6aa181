"""The transport of :mod:`broker.relay.transport` over RabbitMQ: one event loop carrying a consumer
connection and one connection per publisher.  A neighbour's link that is lost connects again by
itself, after a back-off that doubles up to :data:`REOPEN_MAX_SECONDS`; the session goes on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.relay.amqp.links import Consumer, Link
from broker.relay.amqp.loop import Loop
from broker.relay.transport import LOCAL, Events, Plan

CLOSE_SECONDS = 0.2
"""How long a closing session lets its connections' closes go out before it leaves the loop."""
REOPEN_SECONDS, REOPEN_MAX_SECONDS = 1.0, 30.0
"""The first pause before a lost link connects again, and the longest."""


class AmqpSession:
    """:class:`broker.relay.transport.Session` on one :class:`Loop`."""

    def __init__(self, plan: Plan, events: Events) -> None:
        self.loop = Loop()
        self._events = events
        self._closing = False
        self._serving = False
        self._pause: dict[str, float] = {}
        """A lost link's next pause before it connects again."""
        self.publishers: Mapping[str, Link] = {
            name: Link(name, url, self.loop, self._ready, self._lost) for name, url in plan.publishers.items()}
        self._essential = {LOCAL} if LOCAL in plan.publishers else set(plan.publishers)
        """The links the session cannot serve without: the hub's own broker; in a plan without it
        (a forwarder of the benchmarks), every link."""
        self.consumer = Consumer(plan.consume_url, plan.queue, plan.prefetch, self.loop, events.delivered,
                                 self._ready, self._lost)

    def _ready(self, what: object) -> None:
        if self._closing:
            return
        if isinstance(what, Link) and what.name not in self._essential:
            self._pause.pop(what.name, None)
            if self._serving:
                self._events.link(what.name, True, "")
            return
        if not self._serving and self.consumer.ready and all(self.publishers[n].ready for n in self._essential):
            self._serving = True
            self._events.ready()

    def _lost(self, what: Any, why: str) -> None:
        if self._closing:
            return
        if isinstance(what, Link) and what.name not in self._essential:
            pause = self._pause.get(what.name, REOPEN_SECONDS)
            self._pause[what.name] = min(pause * 2, REOPEN_MAX_SECONDS)
            self.loop.call_later(pause, what.reopen)
            if self._serving:
                self._events.link(what.name, False, why)
            return
        self._events.lost(getattr(what, "name", "consumer"), why)

    def run(self) -> None:
        self.loop.start()
        self.loop.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.consumer.close()
        for link in self.publishers.values():
            link.close()
        self.loop.call_later(CLOSE_SECONDS, self.loop.stop)  # let the closes flush, then leave the loop


class AmqpTransport:
    """:class:`broker.relay.transport.Transport` over RabbitMQ."""

    def session(self, plan: Plan, events: Events) -> AmqpSession:
        return AmqpSession(plan, events)
