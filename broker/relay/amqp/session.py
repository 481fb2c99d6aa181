"""The transport of :mod:`broker.relay.transport` over RabbitMQ: one event loop carrying a consumer
connection and one connection per publisher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.relay.amqp.links import Consumer, Link
from broker.relay.amqp.loop import Loop
from broker.relay.transport import Events, Plan

CLOSE_SECONDS = 0.2
"""How long a closing session lets its connections' closes go out before it leaves the loop."""


class AmqpSession:
    """:class:`broker.relay.transport.Session` on one :class:`Loop`."""

    def __init__(self, plan: Plan, events: Events) -> None:
        self.loop = Loop()
        self._events = events
        self._closing = False
        self.publishers: Mapping[str, Link] = {
            name: Link(name, url, self.loop, self._ready, self._lost) for name, url in plan.publishers.items()}
        self.consumer = Consumer(plan.consume_url, plan.queue, plan.prefetch, self.loop, events.delivered,
                                 self._ready, self._lost)

    def _ready(self, _what: object) -> None:
        if not self._closing and self.consumer.ready and all(p.ready for p in self.publishers.values()):
            self._events.ready()

    def _lost(self, what: Any, why: str) -> None:
        if not self._closing:
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
