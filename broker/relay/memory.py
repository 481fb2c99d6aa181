"""An in-memory transport: a stub broker for tests of the hub worker without RabbitMQ.

:class:`MemoryBroker` holds queues of messages; a session (:class:`MemorySession`) consumes one of
them and publishes into others, with the semantics the worker relies on from RabbitMQ: manual
acks and a prefetch, unacked deliveries back in their queue (marked redelivered) when the session
goes, publisher confirms.  Each session has its own loop, in virtual time: it runs due timers at
once, in order, so a test of a 60-second back-off takes no time, and a session whose worker was
killed simply runs no more.  Tests steer what RabbitMQ would decide or suffer:

- :attr:`MemoryBroker.confirming` decides each publish's confirm: ack, nack, or held back (the
  broker has the message; its confirm has not reached the worker yet);
- :meth:`MemoryBroker.lose` ends a session's connection: its worker hears of it;
- :meth:`MemoryBroker.cut` takes a neighbour's link away (its broker is down), :meth:`MemoryBroker.mend`
  brings it back: the session goes on, its worker hears of each;
- :meth:`MemoryBroker.crash` ends a session as a SIGKILL of its worker would: nobody hears anything.

Where a publish lands is named ``<publisher>:<exchange>:<routing key>`` (:func:`address`), except
what the hub puts in its outbound exchange, which lands in that neighbour's outbound queue as in
RabbitMQ; a test moves messages on (a retry tier's expiry back into the ingress, say) with :meth:`MemoryBroker.move`.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from broker.core import wire
from broker.relay.transport import LOCAL, Confirmed, Events, Outgoing, Plan, Received

Decision = Literal["ack", "nack", "hold"]


def address(publisher: str, message: Outgoing) -> str:
    """The queue a publish lands in: ``<publisher>:<exchange>:<routing key>``, or the outbound queue
    of a neighbour."""
    if publisher == LOCAL and message.exchange == wire.EX_OUTBOUND:
        return wire.outbound_queue(message.routing_key)
    return f"{publisher}:{message.exchange}:{message.routing_key}"


@dataclass
class Stored:
    """A message in a queue, with what its publisher said of it."""

    body: bytes
    message_id: str
    headers: dict[str, Any]
    exchange: str
    user_id: str = ""
    redelivered: bool = False
    routing_key: str = ""


class MemoryLoop:
    """:class:`broker.relay.transport.Loop` over virtual time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._soon: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> object:
        n = next(self._ids)
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), n, callback))
        return n

    def cancel(self, timer: object) -> None:
        if isinstance(timer, int):
            self._cancelled.add(timer)

    def call_soon(self, callback: Callable[[], None]) -> None:
        self._soon.append(callback)

    call_threadsafe = call_soon

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass: run everything queued and every timer due by then."""
        until = self.now + seconds
        while self.step(until - self.now):
            pass
        self.now = max(self.now, until)

    def step(self, horizon: float) -> bool:
        """Run what is queued, else the next timer due within ``horizon`` seconds of now; False when
        nothing is left to do that soon."""
        if self._soon:
            self._soon.popleft()()
            return True
        while self._timers and self._timers[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._timers)[1])
        if self._timers and self._timers[0][0] <= self.now + horizon:
            at, _, callback = heapq.heappop(self._timers)
            self.now = max(self.now, at)
            callback()
            return True
        return False


class MemoryPublisher:
    def __init__(self, session: MemorySession, name: str) -> None:
        self.session, self.name = session, name
        self.ready = False
        self.pending: dict[int, Confirmed] = {}

    def publish(self, message: Outgoing, confirmed: Confirmed) -> None:
        if not self.ready:
            confirmed(False)
            return
        self.session.broker.received(self, message, confirmed)

    def confirm(self, confirmed: Confirmed, ok: bool) -> None:
        self.session.loop.call_soon(lambda: confirmed(ok))


class MemoryConsumer:
    def __init__(self, session: MemorySession, queue: str, prefetch: int) -> None:
        self.session, self.queue, self.prefetch = session, queue, prefetch
        self.ready = False
        self.started = False
        self.followed: list[str] = []
        self.unacked: dict[int, tuple[str, Stored]] = {}
        self._tags = itertools.count(1)

    def start(self) -> None:
        self.started = True
        self.session.loop.call_soon(self.deliver)

    def follow(self, queue: str) -> None:
        if queue not in self.followed:
            self.followed.append(queue)
            self.session.loop.call_soon(self.deliver)

    def unfollow(self, queue: str) -> None:
        if queue in self.followed:
            self.followed.remove(queue)

    def takes(self, queue: str) -> bool:
        return (self.started and queue == self.queue) or queue in self.followed

    def deliver(self) -> None:
        for name in ([self.queue] if self.started else []) + self.followed:
            queue = self.session.broker.queues[name]
            while not self.session.closed and self.takes(name) and queue and len(self.unacked) < self.prefetch:
                stored, tag = queue.popleft(), next(self._tags)
                self.unacked[tag] = (name, stored)
                self.session.events.delivered(Received(stored.body, stored.message_id, dict(stored.headers), tag,
                                                       stored.redelivered, stored.exchange, stored.routing_key))

    def ack_all(self, delivery_tags: Iterable[int]) -> None:
        for tag in delivery_tags:
            if self.unacked.pop(tag, None) is None:
                raise AssertionError(f"delivery {tag} acked twice, or never delivered")
        self.session.loop.call_soon(self.deliver)

    def requeue(self, delivery_tag: int) -> None:
        taken = self.unacked.pop(delivery_tag, None)
        if taken is None:
            raise AssertionError(f"delivery {delivery_tag} settled twice, or never delivered")
        name, stored = taken
        self.session.broker.queues[name].appendleft(replace(stored, redelivered=True))
        self.session.loop.call_soon(self.deliver)

    def give_back(self) -> None:
        """The connection is gone: every unacked delivery goes back, marked redelivered."""
        for tag in sorted(self.unacked, reverse=True):
            name, stored = self.unacked[tag]
            self.session.broker.queues[name].appendleft(replace(stored, redelivered=True))
        self.unacked.clear()


class MemorySession:
    """:class:`broker.relay.transport.Session` on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, plan: Plan, events: Events) -> None:
        self.broker, self.plan, self.events = broker, plan, events
        self.loop = MemoryLoop()
        self.closed = False
        self.publishers = {name: MemoryPublisher(self, name) for name in plan.publishers}
        self.consumer = MemoryConsumer(self, plan.queue, plan.prefetch)

        def connected() -> None:
            for p in self.publishers.values():
                p.ready = p.name not in broker.away
            self.consumer.ready = True
            self.serving = True
            events.ready()

        self.serving = False
        self.loop.call_soon(connected)

    def run(self) -> None:
        """Run until the session is closed, or until nothing is due within the broker's horizon
        (the test then looks, adds messages, and runs again)."""
        while self.step():
            pass

    def step(self) -> bool:
        """One callback or due timer; False when closed or idle."""
        return not self.closed and self.loop.step(self.broker.horizon)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for p in self.publishers.values():
            p.ready = False
            pending, p.pending = p.pending, {}
            for confirmed in pending.values():
                confirmed(False)
        self.consumer.ready = False
        self.consumer.give_back()
        if self in self.broker.sessions:
            self.broker.sessions.remove(self)


@dataclass
class MemoryBroker:
    """Queues in memory, and the sessions working on them."""

    queues: dict[str, deque[Stored]] = field(default_factory=lambda: {})
    confirming: Callable[[str, Outgoing], Decision] = field(default=lambda _queue, _message: "ack")
    """Decides the confirm of each publish, by the queue it lands in and the message."""
    horizon: float = 5.0
    """How far ahead (virtual seconds) a session's :meth:`MemorySession.run` looks for due timers."""
    sessions: list[MemorySession] = field(default_factory=list)
    """The sessions alive (neither closed nor crashed)."""
    held: list[tuple[MemoryPublisher, int]] = field(default_factory=list)
    away: set[str] = field(default_factory=set)
    """Publishers (neighbours' links) whose broker cannot be reached: :meth:`cut`, :meth:`mend`."""
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.queues = _Queues(self.queues)

    # -- what a test does ----------------------------------------------------------------------

    def put(self, queue: str, body: bytes, *, exchange: str, headers: dict[str, Any] | None = None,
            message_id: str = "") -> None:
        """A message published into ``queue`` through ``exchange`` (who handed it in)."""
        self.queues[queue].append(Stored(body, message_id, dict(headers or {}), exchange))
        self._arrived(queue)

    def messages(self, queue: str) -> list[Stored]:
        return list(self.queues[queue])

    def move(self, source: str, target: str, *, exchange: str) -> int:
        """Move every message of ``source`` into ``target`` as if published through ``exchange``
        (a retry tier dead-lettering into the ingress); returns how many."""
        moved = 0
        while self.queues[source]:
            stored = self.queues[source].popleft()
            self.queues[target].append(replace(stored, exchange=exchange, redelivered=False))
            moved += 1
        self._arrived(target)
        return moved

    def release(self, ok: bool = True) -> None:
        """Send the confirms held back so far (``ok``: acks, else nacks)."""
        held, self.held = self.held, []
        for publisher, seq in held:
            confirmed = publisher.pending.pop(seq, None)
            if confirmed is not None:
                publisher.confirm(confirmed, ok)

    def run(self) -> None:
        """Run every live session until none has anything due within :attr:`horizon`."""
        while any([s.step() for s in list(self.sessions)]):
            pass

    def lose(self, session: MemorySession, what: str = "consumer", why: str = "connection reset") -> None:
        """``session``'s connection ends: its worker is told (and closes the session)."""
        session.loop.call_soon(lambda: session.events.lost(what, why))

    def cut(self, name: str, why: str = "connection refused") -> None:
        """The broker of link ``name`` goes away: every session's publisher of that name is down,
        what it had not confirmed is reported unconfirmed, and the worker is told."""
        self.away.add(name)
        for s in self.sessions:
            p = s.publishers.get(name)
            if p is None or not p.ready:
                continue
            p.ready = False
            pending, p.pending = p.pending, {}
            self.held = [(pub, seq) for pub, seq in self.held if pub is not p]
            for confirmed in pending.values():
                s.loop.call_soon(functools.partial(confirmed, False))
            if s.serving:
                s.loop.call_soon(functools.partial(s.events.link, name, False, why))

    def mend(self, name: str) -> None:
        """The broker of link ``name`` is back: the publishers of that name connect again."""
        self.away.discard(name)
        for s in self.sessions:
            p = s.publishers.get(name)
            if p is not None and not p.ready and s.serving and not s.closed:
                p.ready = True
                s.loop.call_soon(functools.partial(s.events.link, name, True, ""))

    def crash(self, session: MemorySession) -> None:
        """``session``'s worker dies (SIGKILL): no callback reaches it again; what it had not
        acked goes back to the queue; what it published stays where it landed."""
        for p in session.publishers.values():
            p.ready, p.pending = False, {}
        session.closed = True
        session.consumer.ready = False
        session.consumer.give_back()
        if session in self.sessions:
            self.sessions.remove(session)

    # -- what a session does -------------------------------------------------------------------

    def _arrived(self, queue: str) -> None:
        """Messages came into ``queue``: its consumers take them."""
        for s in self.sessions:
            if s.consumer.takes(queue):
                s.loop.call_soon(s.consumer.deliver)

    def session(self, plan: Plan, events: Events) -> MemorySession:
        s = MemorySession(self, plan, events)
        self.sessions.append(s)
        return s

    def received(self, publisher: MemoryPublisher, message: Outgoing, confirmed: Confirmed) -> None:
        queue = address(publisher.name, message)
        decision = self.confirming(queue, message)
        if decision != "nack":
            self.queues[queue].append(Stored(message.body, message.message_id, dict(message.headers),
                                             message.exchange, message.user_id, routing_key=message.routing_key))
            self._arrived(queue)
        if decision == "hold":
            seq = next(self._seq)
            publisher.pending[seq] = confirmed
            self.held.append((publisher, seq))
            return
        publisher.confirm(confirmed, decision == "ack")


class _Queues(dict[str, deque[Stored]]):
    """Queues made on first use."""

    def __missing__(self, name: str) -> deque[Stored]:
        self[name] = deque()
        return self[name]


class MemoryTransport:
    """:class:`broker.relay.transport.Transport` on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def session(self, plan: Plan, events: Events) -> MemorySession:
        return self.broker.session(plan, events)
