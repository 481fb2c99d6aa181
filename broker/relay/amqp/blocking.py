"""Blocking AMQP calls, one at a time: declaring (set-up), publishing with a confirm, fetching
from a queue, reading depths.  For the CLI, operators' commands and the agency SDK; the hub worker
uses :mod:`broker.relay.amqp.session`.  pika's errors become
:class:`~broker.core.errors.TransientError` (or :class:`~broker.core.errors.AccessRefused`) here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions
from pika.spec import BasicProperties

from broker.core.errors import AccessRefused, TransientError
from broker.i18n import N_
from broker.relay.amqp.connection import Connection
from broker.relay.amqp.params import AMQP_ERRORS, describe, parameters, properties
from broker.relay.layout import Binding, Exchange, Queue
from broker.relay.transport import Outgoing, Received


@contextmanager
def blocking(url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A short-lived blocking connection and channel; pika errors become TransientError."""
    try:
        conn = _connect(url)
    except AMQP_ERRORS as exc:
        raise TransientError(N_("cannot connect to the broker: {reason}"), reason=describe(exc)) from None
    try:
        yield conn.channel()
    except pika.exceptions.ChannelClosedByBroker as exc:
        _refused(exc)
        raise TransientError(N_("broker error: {reason}"), reason=describe(exc)) from None
    except AMQP_ERRORS as exc:
        raise TransientError(N_("broker error: {reason}"), reason=describe(exc)) from None
    finally:
        try:
            conn.close()
        except AMQP_ERRORS:
            pass


def _connect(url: str) -> pika.BlockingConnection:
    """A blocking connection; a refused login or vhost is :class:`AccessRefused` (not worth retrying)."""
    try:
        return pika.BlockingConnection(parameters(url), _impl_class=Connection)
    except (pika.exceptions.ProbableAccessDeniedError, pika.exceptions.ProbableAuthenticationError) as exc:
        raise AccessRefused(N_("the broker refused the login or the vhost: {reason}"), reason=describe(exc)) from None


def _refused(exc: pika.exceptions.ChannelClosedByBroker) -> None:
    """Raise :class:`AccessRefused` if the broker closed the channel for lack of rights (403)."""
    if exc.reply_code == 403:
        raise AccessRefused(N_("access refused: {reason}"), reason=exc.reply_text) from None


def declare(url: str, items: list[Exchange | Queue | Binding]) -> None:
    """Declare exchanges, queues and bindings idempotently."""
    with blocking(url) as ch:
        for item in items:
            if isinstance(item, Exchange):
                ch.exchange_declare(item.name, item.type, durable=True, arguments=item.arguments or None)
            elif isinstance(item, Queue):
                ch.queue_declare(item.name, durable=True, arguments=item.arguments or None)
            else:
                ch.queue_bind(item.queue, item.exchange, routing_key=item.routing_key or None)


def props(*, message_id: str, user_id: str | None, headers: dict[str, Any]) -> BasicProperties:
    """The properties :func:`properties` gives a message with these."""
    return properties(Outgoing("", "", b"", message_id, user_id or "", headers))


def publish(url: str, exchange: str, routing_key: str, body: bytes, *, message_id: str,
            user_id: str | None, headers: dict[str, Any] | None = None) -> None:
    """Publish one persistent message and wait for the broker's confirm."""
    with blocking(url) as ch:
        ch.confirm_delivery()
        try:
            ch.basic_publish(exchange, routing_key, body,
                             props(message_id=message_id, user_id=user_id, headers=headers or {}),
                             mandatory=False)
        except pika.exceptions.NackError:
            raise TransientError(N_("the broker refused the message (nack); try again")) from None


class Publisher:
    """A kept-open blocking connection with publisher confirms, for clients that send many messages.

    A publish that fails because the connection was lost is retried on a fresh connection
    (``retries`` times, with a short back-off) before :class:`TransientError` is raised.
    """

    def __init__(self, url: str, *, retries: int = 3) -> None:
        self.url = url
        self.retries = retries
        self._conn: Any = None
        self._ch: Any = None

    def _channel(self) -> Any:
        if self._ch is None or not self._ch.is_open:
            self.close()
            self._conn = _connect(self.url)
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
        return self._ch

    def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str,
                user_id: str | None, headers: dict[str, Any] | None = None) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._channel().basic_publish(
                    exchange, routing_key, body,
                    props(message_id=message_id, user_id=user_id, headers=headers or {}))
                return
            except pika.exceptions.ChannelClosedByBroker as exc:
                self.close()
                _refused(exc)
                error = exc
            except pika.exceptions.NackError:
                error = TransientError(N_("the broker refused the message (nack)"))
            except AMQP_ERRORS as exc:
                self.close()
                error = exc
            if attempt < self.retries:
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
        raise TransientError(N_("could not publish after {n} attempts: {reason}"), n=self.retries + 1,
                             reason=describe(error))

    def close(self) -> None:
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except AMQP_ERRORS:
            pass
        self._conn = self._ch = None


def fetch(url: str, queue: str, handle: Callable[[Received], bool], *, limit: int = 100,
          wait: float = 0.0) -> int:
    """Take up to ``limit`` messages; ack those ``handle`` returns True for, requeue the others.

    Requeueing happens after the batch, so one call never sees a message twice.
    ``wait`` > 0 waits that long for the first message.  Returns how many were acked.
    """
    acked = 0
    keep: list[int] = []
    with blocking(url) as ch:
        ch.basic_qos(prefetch_count=max(1, min(limit, 1000)))
        seen = 0
        for method, properties, body in ch.consume(queue, inactivity_timeout=wait or 0.05):
            if method is None:
                break
            r = Received(body, properties.message_id or "", dict(properties.headers or {}),
                         method.delivery_tag, bool(method.redelivered))
            if handle(r):
                ch.basic_ack(method.delivery_tag)
                acked += 1
            else:
                keep.append(method.delivery_tag)
            seen += 1
            if seen >= limit:
                break
        for tag in keep:
            ch.basic_nack(tag, requeue=True)
        ch.cancel()
    return acked


def queue_depth(url: str, queue: str) -> int:
    with blocking(url) as ch:
        return int(ch.queue_declare(queue, passive=True).method.message_count)


def depths(url: str, queues: Sequence[str]) -> dict[str, int]:
    """Ready messages per queue (passive declares; a missing queue is left out)."""
    out: dict[str, int] = {}
    with blocking(url) as ch:
        conn = ch.connection
        for name in queues:
            try:
                out[name] = int(ch.queue_declare(name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                ch = conn.channel()  # 404 closes the channel, not the connection
    return out


def head_ages(url: str, queues: Sequence[str], *, now: float | None = None) -> dict[str, float | None]:
    """Seconds since the message at the head of each queue was published there (its ``timestamp``);
    None for an empty queue or a message without one.  The head is looked at and put straight back
    (``basic.get`` then ``nack`` with requeue), so do not use this on a queue with a delivery limit."""
    now = time.time() if now is None else now
    out: dict[str, float | None] = {}
    with blocking(url) as ch:
        conn = ch.connection
        for name in queues:
            try:
                method, properties, _body = ch.basic_get(name, auto_ack=False)
            except pika.exceptions.ChannelClosedByBroker:
                ch = conn.channel()
                continue
            if method is None:
                out[name] = None
                continue
            ch.basic_nack(method.delivery_tag, requeue=True)
            out[name] = max(0.0, now - properties.timestamp) if properties.timestamp else None
    return out
