"""How the transport makes pika write: one write per I/O loop turn and connection, not one per frame."""

from __future__ import annotations

import collections
import ssl
from typing import Any

import pytest
from pika.adapters.utils.io_services_utils import _AsyncTransportBase

import broker.relay.transport  # noqa: F401 - installs the coalescing


class _Socket:
    """What pika's transport sends through (a TLS socket that may ask to wait once)."""

    def __init__(self, want_write_first: bool = False) -> None:
        self.sent: list[bytes] = []
        self.want_write = want_write_first

    def send(self, data: bytes) -> int:
        if self.want_write:
            self.want_write = False
            raise ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "want write")
        self.sent.append(bytes(data))
        return len(data)


class _Transport:
    """The state ``_AsyncTransportBase._produce`` works on."""

    def __init__(self, sock: _Socket, chunks: list[bytes]) -> None:
        self._sock = sock
        self._tx_buffers = collections.deque(chunks)
        self._tx_buffered_byte_count = sum(map(len, chunks))

    @staticmethod
    def _sigint_safe_send(sock: Any, data: bytes) -> int:
        return int(sock.send(data))

    def produce(self) -> None:
        _AsyncTransportBase._produce(self)  # type: ignore[arg-type]


def test_the_frames_of_a_turn_go_out_in_one_write() -> None:
    """A publish's method, header and body frames and an ack: one send, the same bytes in order."""
    frames = [b"method", b"header", b"body" * 100, b"ack"]
    sock = _Socket()
    t = _Transport(sock, frames)
    t.produce()
    assert sock.sent == [b"".join(frames)] and not t._tx_buffers and t._tx_buffered_byte_count == 0


def test_a_write_the_socket_deferred_is_retried_alone() -> None:
    """When TLS asks to wait in the middle of a send, the same buffer is sent again as it was (as
    OpenSSL requires), and what was queued after it is joined again afterwards."""
    sock = _Socket(want_write_first=True)
    t = _Transport(sock, [b"a1", b"a2"])
    with pytest.raises(ssl.SSLWantWriteError):
        t.produce()
    assert sock.sent == [] and list(t._tx_buffers) == [b"a1a2"]
    t._tx_buffers.extend([b"b1", b"b2"])
    t._tx_buffered_byte_count += 4
    t.produce()
    assert sock.sent[0] == b"a1a2" and b"".join(sock.sent) == b"a1a2b1b2"
    t._tx_buffers.extend([b"c1", b"c2"])
    t._tx_buffered_byte_count += 4
    t.produce()
    assert sock.sent[-1] == b"c1c2"


def test_a_connection_still_opening_closes_cleanly() -> None:
    """A hub tears down its other connections when one is lost, often while they are still being
    opened: closing one then raises nothing and reports no loss; it ends when its opening does
    (here the peer, which never speaks AMQP, hangs up)."""
    import socket
    import threading

    from broker.relay import links

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def hang_up() -> None:
            peer, _ = listener.accept()
            threading.Timer(0.4, peer.close).start()

        threading.Thread(target=hang_up, daemon=True).start()
        ioloop = links.new_ioloop()
        lost: list[str] = []
        link = links.Link("x", f"amqp://u:p@127.0.0.1:{listener.getsockname()[1]}/", ioloop,
                          lambda _l: None, lambda _l, why: lost.append(why))
        ioloop.call_later(0.2, link.close)
        ioloop.call_later(1.5, ioloop.stop)
        ioloop.start()
        assert link.connection.is_closed and not link.ready and lost == []
