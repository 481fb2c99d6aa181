"""How lienthong's AMQP connections write and close.

:class:`Connection` is pika's ``SelectConnection`` with two changes, made on each connection's own
socket transport when it opens (:func:`shape`), so that pika itself, and any other code in the
process that uses it, is left as it is:

- what the connection queued in one I/O loop turn goes out in one write, at the end of that
  turn, not one TLS record and one system call per frame;
- a TLS connection is ended with TLS's ``close_notify`` before its socket is closed.

The blocking helpers (:mod:`broker.relay.amqp.blocking`) get it through ``BlockingConnection``'s
``_impl_class``.  These are the only lines that touch pika's socket transport; they rely on its
``_produce``, ``write``, ``_close_and_finalize``, ``_tx_buffers`` and ``_ssl_writable_action``
(pika 1.3 and 1.4).  ``tests/test_transport.py`` holds pika to this.
"""

from __future__ import annotations

import ssl
import time
import types
from typing import Any

import pika

CLOSE_WAIT_SECONDS = 0.5
"""How long closing a TLS connection waits for the peer to answer our ``close_notify``: RabbitMQ
ends the connection at once, a peer that is gone fails at once; only a silent one takes this long."""


class Connection(pika.SelectConnection):  # type: ignore[misc]  # pika ships partial types
    """A ``SelectConnection`` whose transport is shaped by :func:`shape` once it is connected."""

    def _proto_connection_made(self, transport: Any) -> None:
        shape(transport)
        super()._proto_connection_made(transport)


def shape(transport: Any) -> None:
    """Give one connected socket transport the coalescing write and the TLS close."""
    transport._produce = types.MethodType(coalescing(type(transport)._produce), transport)
    transport._close_and_finalize = types.MethodType(quiet_close(type(transport)._close_and_finalize), transport)
    if isinstance(getattr(transport, "_sock", None), ssl.SSLSocket) and hasattr(transport, "_ssl_writable_action"):
        transport.write = types.MethodType(eager(type(transport).write), transport)


def coalescing(produce: Any) -> Any:
    """A transport's ``_produce`` that joins the buffers queued since the last send into one.

    pika queues each frame of a publish (method, header, body) and each ack as its own buffer
    and sends them one ``send`` each.  Joining them first leaves the bytes and their order as
    they were.  A buffer that a send left half-done (TLS wanted to wait, or the socket took
    part) is sent again alone, as OpenSSL requires of a TLS write; the joining resumes after."""

    def coalescing_produce(self: Any) -> None:
        buffers = self._tx_buffers
        if len(buffers) > 1 and not getattr(self, "_lt_retrying", False):
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)
        try:
            produce(self)
        finally:
            self._lt_retrying = bool(self._tx_buffers)  # what is left starts with a buffer to retry as is

    return coalescing_produce


def eager(write: Any) -> Any:
    """A TLS transport's ``write`` that sends at the end of the current loop turn.

    pika turns on the socket's write interest and sends when the next ``poll`` reports it
    writable: a loop turn of its own (a ``poll``, its dispatch, the interest turned off again)
    for every burst of frames.  A loopback or LAN socket is nearly always writable, so the send
    is tried from a callback queued behind what this turn still does (which the joining above
    then sends with it); only if TLS has to wait does the write interest take over, as before.
    Only on a loop that queues its own callbacks without a wake-up (``sends_eagerly``, the
    worker's :class:`broker.relay.amqp.loop.Loop`): on pika's own loop, a blocking client's, the
    callback would cost the wake-up the send saves."""

    def eager_write(self: Any, data: bytes) -> None:
        idle = self._ssl_writable_action is None and not self._tx_buffers
        write(self, data)
        if idle and self._ssl_writable_action is not None and getattr(self._nbio._loop, "sends_eagerly", False):
            self._nbio.add_callback_threadsafe(self._on_socket_writable)

    return eager_write


def quiet_close(close: Any) -> Any:
    """A transport's close that ends a TLS connection with ``close_notify`` before the socket.

    pika closes a TLS connection's socket after ``Close-Ok`` without ``close_notify``: a bare FIN.
    RabbitMQ 3.10 on Erlang/OTP 25 sometimes never closes its side after that FIN (seen on one of
    the four connections of every other ``broker setup``); 15 s later its heartbeat reaches our
    closed socket, our kernel answers with a reset, and the VM spins a core on the dead socket
    (cf. erlang/otp#10791) until the heartbeat timeout ends the connection 15-20 s later.  With
    ``close_notify`` first, as TLS asks, the broker ends the connection at once.  Plain
    connections, and a socket already broken, close as before."""

    def close_and_finalize(self: Any) -> None:
        sock = self._sock
        if self._state != self._STATE_COMPLETED and isinstance(sock, ssl.SSLSocket):
            end_tls(sock, time.monotonic() + CLOSE_WAIT_SECONDS)
        close(self)

    return close_and_finalize


def end_tls(sock: Any, deadline: float) -> None:
    """End the TLS session of ``sock`` (our ``close_notify``), then read and drop what it still
    receives, until the peer ends the stream, the socket fails, or ``deadline`` passes."""
    try:
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        sock.unwrap()
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return
    except (OSError, ValueError):  # reset, timed out, TLS already shut down or never set up
        return
