"""What a hub worker needs of a message broker, and nothing of pika.

A worker runs one :class:`Session` at a time: a consumer on its ingress queue, one publisher per
place it publishes to (its own vhost, :data:`LOCAL`, and each neighbouring hub), and the event
loop they share.  The session serves once the consumer and the own vhost's publisher are up; a
neighbour's link (another operator's broker, maybe) comes and goes on its own, reconnecting with
back-off, and the worker hears of each change (:meth:`Events.link`).
:class:`Transport` opens sessions.  Two implementations: the AMQP one
(:mod:`broker.relay.amqp.session`, RabbitMQ over TLS) and an in-memory one
(:mod:`broker.relay.memory`, for tests of the worker without a broker).

Everything happens on the loop's thread: callbacks (deliveries, confirms, timers) never run
concurrently.  Only :meth:`Loop.call_threadsafe` may be called from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

LOCAL = "."
"""The publisher into the hub's own vhost (inboxes, parking, retry tiers, outbound queues); the
others are named by the neighbouring hub they publish to."""

Confirmed = Callable[[bool], None]
"""Called once per publish: True when the broker confirmed it, False when it refused it (nack) or
the connection was lost first."""


@dataclass(frozen=True)
class Received:
    """One message taken from a queue: what callers need of the broker's delivery."""

    body: bytes
    message_id: str
    headers: dict[str, Any]
    delivery_tag: int
    redelivered: bool
    exchange: str = ""
    """The exchange it was published to (for the hub: it says who handed the message in)."""
    routing_key: str = ""


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: persistent, with these properties."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    user_id: str
    headers: dict[str, Any] = field(default_factory=dict)


class Loop(Protocol):
    """The event loop of a session."""

    def call_later(self, seconds: float, callback: Callable[[], None]) -> object:
        """Run ``callback`` after ``seconds``; returns a handle for :meth:`cancel`."""

    def cancel(self, timer: object) -> None:
        """Forget a timer that has not run yet."""

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in this loop turn, after what the turn still does."""

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop's thread, from any thread or a signal handler."""


class Publisher(Protocol):
    """A channel with publisher confirms, many in flight."""

    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    def publish(self, message: Outgoing, confirmed: Confirmed) -> None:
        """Hand ``message`` to the broker; never waits.  Not ready: ``confirmed(False)`` at once."""


class Consumer(Protocol):
    """Deliveries of one queue with manual acks and a bounded prefetch."""

    @property
    def ready(self) -> bool: ...

    def start(self) -> None:
        """Begin delivering (to :meth:`Events.delivered`)."""

    def follow(self, queue: str) -> None:
        """Deliver from ``queue`` too, on the same channel and acks (an outbound queue)."""

    def unfollow(self, queue: str) -> None:
        """Stop delivering from ``queue`` (its unacked deliveries stay the worker's to settle)."""

    def ack_all(self, delivery_tags: Iterable[int]) -> None:
        """Settle these deliveries as done."""

    def requeue(self, delivery_tag: int) -> None:
        """Hand this delivery back to the queue (the broker delivers it again, maybe elsewhere)."""


class Events(Protocol):
    """What a session tells its worker."""

    def delivered(self, message: Received) -> None: ...

    def ready(self) -> None:
        """The consumer and the own vhost's publisher are connected: the worker may start
        consuming.  Links to neighbours may be up already (their publishers say ``ready``)."""

    def link(self, name: str, up: bool, why: str) -> None:
        """After :meth:`ready`: the link to neighbour ``name`` came up, or went down (``why``;
        its unconfirmed publishes were reported ``confirmed(False)``, and it reconnects by itself)."""

    def lost(self, what: str, why: str) -> None:
        """The consumer's or the own vhost's connection or channel ended on its own: the session
        is over (the worker closes it and opens another); unacked deliveries go back to the
        queue, unconfirmed publishes were reported ``confirmed(False)``."""


@dataclass(frozen=True)
class Plan:
    """What a session connects: where to consume, and where to publish (name -> broker URL;
    :data:`LOCAL` is the hub's own vhost)."""

    consume_url: str
    queue: str
    prefetch: int
    publishers: Mapping[str, str]


class Session(Protocol):
    @property
    def loop(self) -> Loop: ...

    @property
    def consumer(self) -> Consumer: ...

    @property
    def publishers(self) -> Mapping[str, Publisher]: ...

    def run(self) -> None:
        """Serve on this thread until :meth:`close` has taken effect."""

    def close(self) -> None:
        """Close the connections and leave :meth:`run` (on the loop's thread)."""


class Transport(Protocol):
    def session(self, plan: Plan, events: Events) -> Session: ...
