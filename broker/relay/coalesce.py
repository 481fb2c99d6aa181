"""pika's socket handling, changed in two ways: what a connection queued in one I/O loop turn goes
out in one write, at the end of that turn; and a TLS connection is ended with TLS's ``close_notify``
before its socket is closed.

Part of the transport (:mod:`broker.relay.transport` installs it on import): the only other place
that touches pika, and the only one that touches its internals.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

CLOSE_WAIT_SECONDS = 0.5
"""How long closing a TLS connection waits for the peer to answer our ``close_notify``: RabbitMQ
ends the connection at once, a peer that is gone fails at once; only a silent one takes this long."""


def install() -> None:
    """Have pika send what one I/O loop turn queued on a connection in one write, and end TLS
    connections with ``close_notify`` (:func:`_quiet_close`); idempotent.

    pika queues each frame of a publish (method, header, body) and each ack as its own buffer and
    sends them one ``send`` each: over TLS, a record and a system call per frame.  Joining the
    queued buffers before sending leaves the bytes and their order as they were.  A buffer that a
    TLS write left half-done (the socket wanted to wait) is sent again alone, as OpenSSL
    requires; the joining resumes after it.
    ``tests/test_transport.py`` holds pika to this."""
    from pika.adapters.utils.io_services_utils import _AsyncSSLTransport, _AsyncTransportBase

    produce = _AsyncTransportBase._produce
    if getattr(produce, "coalesced", False):
        return
    _AsyncSSLTransport.write = _eager(_AsyncSSLTransport.write)
    _AsyncTransportBase._close_and_finalize = _quiet_close(_AsyncTransportBase._close_and_finalize)

    def coalescing_produce(self: Any) -> None:
        buffers = self._tx_buffers
        if len(buffers) > 1 and not getattr(self, "_lt_retrying", False):
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)
        try:
            produce(self)
        except BaseException:
            self._lt_retrying = bool(buffers)  # the first buffer must be retried as it is
            raise
        self._lt_retrying = False

    coalescing_produce.coalesced = True  # type: ignore[attr-defined]
    _AsyncTransportBase._produce = coalescing_produce


def _eager(write: Any) -> Any:
    """A TLS connection's ``write`` that sends at the end of the current loop turn.

    pika turns on the socket's write interest and sends when the next ``poll`` reports it
    writable: a loop turn of its own (a ``poll``, its dispatch, the interest turned off again)
    for every burst of frames.  A loopback or LAN socket is nearly always writable, so the send
    is tried from a callback queued behind what this turn still does (which the joining above
    then sends with it); only if TLS has to wait does the write interest take over, as before.
    Only on a loop that queues its own callbacks without a wake-up (``sends_eagerly``, the
    worker's :class:`broker.relay.links.Loop`): on pika's own loop, a blocking client's, the
    callback would cost the wake-up the send saves."""

    def eager_write(self: Any, data: bytes) -> None:
        idle = self._ssl_writable_action is None and not self._tx_buffers
        write(self, data)
        if idle and self._ssl_writable_action is not None and getattr(self._nbio._loop, "sends_eagerly", False):
            self._nbio.add_callback_threadsafe(self._on_socket_writable)

    return eager_write


def _quiet_close(close: Any) -> Any:
    """A transport's close that ends a TLS connection with ``close_notify`` before the socket.

    pika closes a TLS connection's socket after ``Close-Ok`` without ``close_notify``: a bare FIN.
    RabbitMQ 3.10 on Erlang/OTP 25 sometimes never closes its side after that FIN (seen on one of
    the four connections of every other ``broker setup``); 15 s later its heartbeat reaches our
    closed socket, our kernel answers with a reset, and the VM spins a core on the dead socket
    (cf. erlang/otp#10791) until the heartbeat timeout ends the connection 15-20 s later.  Any
    short-lived connection (``broker setup``, the queue watch, the CLI, the SDK) could set it off.
    With ``close_notify`` first, as TLS asks, the broker ends the connection at once.  Plain
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
