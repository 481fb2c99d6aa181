"""The hub worker's asynchronous connections, all on one event loop (:mod:`broker.relay.amqp.loop`):
:class:`Link`, a publisher that keeps a window of publisher confirms in flight, and
:class:`Consumer`, manual acks with bounded prefetch."""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable, Iterable
from typing import Any

from pika.adapters.select_connection import IOLoop
from pika.spec import Basic, BasicProperties

from broker.relay.amqp.connection import Connection
from broker.relay.amqp.params import AMQP_ERRORS, describe, properties, reachable
from broker.relay.transport import Confirmed, Outgoing, Received


class Link:
    """One connection and one confirm-mode channel on a shared IOLoop.

    ``publish`` never waits: the callback runs when the broker confirms
    (True) or nacks (False), or with False if the connection is lost first.
    A lost link is reported once (``on_lost``); :meth:`reopen` connects it again.
    """

    def __init__(self, name: str, url: str, ioloop: IOLoop, on_ready: Callable[[Link], None],
                 on_lost: Callable[[Link, str], None]) -> None:
        self.name = name
        self._url = url
        self._ioloop = ioloop
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._channel: Any = None
        self._seq = 0
        self._pending: collections.OrderedDict[int, Confirmed] = collections.OrderedDict()
        self.ready = False
        self.down = False
        """Lost, and reported: waiting for :meth:`reopen`."""
        self._closing = False
        self.connection = self._connect()

    def _connect(self) -> Connection:
        return Connection(reachable(self._url), on_open_callback=self._opened, on_open_error_callback=self._open_failed,
                          on_close_callback=self._closed, custom_ioloop=self._ioloop)

    def reopen(self) -> None:
        """Connect again once the link was lost (a neighbour's broker that was away, say)."""
        if self.down and not self._closing:
            self.down, self._channel, self._seq = False, None, 0
            self.connection = self._connect()

    # connection life cycle (callbacks of a connection or channel this link has left behind are ignored)
    def _opened(self, conn: Any) -> None:
        if self._closing or conn is not self.connection:  # closed while it was opening (see _close)
            conn.close()
            return
        conn.channel(on_open_callback=self._channel_opened)

    def _open_failed(self, conn: Any, exc: BaseException) -> None:
        if conn is self.connection:
            self._lost(f"cannot connect: {describe(exc)}")

    def _closed(self, conn: Any, exc: BaseException) -> None:
        if conn is self.connection:
            self._lost(f"connection closed: {describe(exc)}")

    def _channel_opened(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._channel_closed)
        channel.confirm_delivery(self._confirmed, callback=self._confirm_mode_on)

    def _confirm_mode_on(self, _frame: Any) -> None:
        self.ready = True
        self._on_ready(self)

    def _channel_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is not self._channel:
            return
        if not self._closing and self.connection.is_open:
            self.connection.close()
        self._lost(f"channel closed: {describe(exc)}")

    def _lost(self, why: str) -> None:
        if self.down:
            return  # its channel's close, then its connection's: one loss
        self.ready, self.down = False, True
        pending, self._pending = self._pending, collections.OrderedDict()
        for cb in pending.values():
            cb(False)
        if not self._closing:
            self._on_lost(self, why)

    # publishing
    def publish(self, message: Outgoing, confirmed: Confirmed) -> None:
        if not self.ready:
            confirmed(False)
            return
        self._seq += 1
        self._pending[self._seq] = confirmed
        self._channel.basic_publish(message.exchange, message.routing_key, message.body, properties(message))

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            while self._pending:
                first = next(iter(self._pending))
                if first > tag:
                    break
                self._pending.popitem(last=False)[1](ok)
        else:
            cb = self._pending.pop(tag, None)
            if cb is not None:
                cb(ok)

    def close(self) -> None:
        self._closing = True
        self.ready = False
        _close(self.connection)


class Consumer:
    """A consumer connection with manual acks and bounded prefetch, on a shared IOLoop.

    It knows which deliveries of its channel are unsettled (neither acked nor requeued), so that
    :meth:`ack_all` can settle many in one ``multiple`` ack where the order of the tags allows."""

    def __init__(self, url: str, queue: str, prefetch: int, ioloop: IOLoop,
                 on_message: Callable[[Received], None],
                 on_ready: Callable[[Consumer], None], on_lost: Callable[[Consumer, str], None]) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self._on_message = on_message
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._closing = False
        self.channel: Any = None
        self.ready = False
        self._unsettled: set[int] = set()
        self._following: dict[str, str] = {}
        """Queues followed besides :attr:`queue` -> their consumer tags."""
        self.connection = Connection(
            reachable(url), on_open_callback=self._opened,
            on_open_error_callback=lambda c, e: self._lost(f"cannot connect: {describe(e)}"),
            on_close_callback=lambda c, e: self._lost(f"connection closed: {describe(e)}"),
            custom_ioloop=ioloop)

    def _opened(self, conn: Any) -> None:
        if self._closing:  # closed while it was opening (see _close)
            conn.close()
            return
        conn.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        self.channel = channel
        self._unsettled = set()  # delivery tags count again from 1 on a new channel
        self._following = {}
        channel.add_on_close_callback(lambda ch, e: self._lost(f"channel closed: {describe(e)}"))
        channel.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._qos_set())

    def _qos_set(self) -> None:
        self.ready = True
        self._on_ready(self)

    def start(self) -> None:
        self.channel.basic_consume(self.queue, self._deliver, auto_ack=False)

    def follow(self, queue: str) -> None:
        if queue not in self._following and self.channel is not None and self.channel.is_open:
            self._following[queue] = self.channel.basic_consume(queue, self._deliver, auto_ack=False)

    def unfollow(self, queue: str) -> None:
        tag = self._following.pop(queue, None)
        if tag is not None and self.channel is not None and self.channel.is_open:
            self.channel.basic_cancel(tag)

    def _deliver(self, _channel: Any, method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
        self._unsettled.add(int(method.delivery_tag))
        self._on_message(Received(body, str(props.message_id or ""), dict(props.headers or {}),
                                  int(method.delivery_tag), bool(method.redelivered), str(method.exchange),
                                  str(method.routing_key)))

    def ack(self, delivery_tag: int) -> None:
        self.ack_all((delivery_tag,))

    def ack_all(self, delivery_tags: Iterable[int]) -> None:
        """Ack these deliveries in as few frames as their order allows.  Those older than every
        other unsettled delivery go in one ``multiple`` ack, up to the newest of them, which the
        broker settles in one command (a quorum queue: one log entry instead of one per message);
        the rest one by one.  Worth it when a worker acks what one batch of confirms released."""
        tags = sorted(delivery_tags)
        if not tags or self.channel is None or not self.channel.is_open:
            return
        self._unsettled.difference_update(tags)
        together = 0
        if len(tags) > 1:  # one tag goes alone: no need to look at the others
            oldest_other = min(self._unsettled, default=None)
            together = len(tags) if oldest_other is None else bisect.bisect_left(tags, oldest_other)
        if together > 1:
            self.channel.basic_ack(tags[together - 1], multiple=True)
            tags = tags[together:]
        for tag in tags:
            self.channel.basic_ack(tag)

    def requeue(self, delivery_tag: int) -> None:
        if self.channel is not None and self.channel.is_open:
            self._unsettled.discard(delivery_tag)
            self.channel.basic_nack(delivery_tag, requeue=True)

    def _lost(self, why: str) -> None:
        self.ready = False
        if not self._closing:
            self._on_lost(self, why)

    def close(self) -> None:
        self._closing = True
        _close(self.connection)


def _close(connection: Any) -> None:
    """Close an open connection.  One still opening is closed by its own open callback once it
    opens (or it fails): pika cannot abort its handshake without tripping over itself."""
    if connection.is_open:
        try:
            connection.close()
        except AMQP_ERRORS:
            pass
