"""How the AMQP transport makes its connections write (one write per I/O loop turn and connection,
not one per frame) and close (TLS with ``close_notify``, then the socket), without changing pika
for anyone else; the worker's event loop; the consumer's batched acks."""

from __future__ import annotations

import collections
import ssl
import subprocess
import sys
import time
from typing import Any

import pytest
from pika.adapters.utils.io_services_utils import _AsyncTransportBase

from broker.relay.amqp import connection
from tests.relay import ROOT


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
        connection.coalescing(_AsyncTransportBase._produce)(self)


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

    from broker.relay.amqp import links, loop

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def hang_up() -> None:
            peer, _ = listener.accept()
            threading.Timer(0.4, peer.close).start()

        threading.Thread(target=hang_up, daemon=True).start()
        ioloop = loop.new_ioloop()
        lost: list[str] = []
        link = links.Link("x", f"amqp://u:p@127.0.0.1:{listener.getsockname()[1]}/", ioloop,
                          lambda _l: None, lambda _l, why: lost.append(why))
        ioloop.call_later(0.2, link.close)
        ioloop.call_later(1.5, ioloop.stop)
        ioloop.start()
        assert link.connection.is_closed and not link.ready and lost == []


# -- the worker's I/O loop (broker.relay.amqp.loop.Loop) ----------------------------------------

def _counting(obj: Any, method: str) -> list[int]:
    """Count the calls of ``obj.method`` (still made); returns the one-element counter."""
    calls = [0]
    real = getattr(obj, method)

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return real(*args)

    setattr(obj, method, counted)
    return calls


def _counting_turns(ioloop: Any) -> list[int]:
    """Count the loop's turns (one ``poll`` each)."""
    return _counting(ioloop._poller, "poll")


def test_callbacks_from_the_loop_itself_do_not_wake_it_and_run_in_the_same_turn() -> None:
    """A callback the loop's own thread adds is queued without a wake-up through the interrupt
    socket, and runs in the same turn as the code that queued it; a callback from another thread
    still wakes the loop (it would otherwise wait for its next timer)."""
    import threading

    from pika.adapters.select_connection import PollPoller

    from broker.relay.amqp import loop

    ioloop = loop.new_ioloop()
    assert isinstance(ioloop._poller, PollPoller)
    wakes = _counting(ioloop._poller, "wake_threadsafe")
    turns = _counting_turns(ioloop)
    ran: dict[str, tuple[int, int]] = {}  # name -> (turn, wakes so far)

    def second() -> None:
        ran["second"] = (turns[0], wakes[0])
        threading.Thread(target=lambda: ioloop.add_callback_threadsafe(from_thread)).start()

    def first() -> None:
        ran["first"] = (turns[0], wakes[0])
        ioloop.add_callback(second)

    def from_thread() -> None:
        ran["thread"] = (turns[0], wakes[0])
        ioloop.stop()

    ioloop.call_later(0.05, first)
    ioloop.call_later(5, ioloop.stop)  # the test fails rather than hangs
    ioloop.start()
    ioloop.close()
    assert ran["first"][0] == ran["second"][0]  # same turn
    assert ran["first"][1] == ran["second"][1] == 0  # no wake-ups from the loop's own thread
    assert ran["thread"][1] == 1  # the other thread's woke it, once


def test_a_publish_is_sent_in_the_turn_that_made_it(tmp_path: Any, rabbitmq_urls: tuple[str, str]) -> None:
    """Over TLS to the real broker, the frames of a publish leave in the loop turn that published,
    not in the next one (after a ``poll`` has reported the socket writable), and are confirmed."""
    from broker.core import wire
    from broker.relay.amqp import links, loop
    from broker.relay.transport import Outgoing
    from tests.relay import Relay

    relay = Relay(tmp_path, *rabbitmq_urls, workers=0)
    try:
        agency = "000.00.51.H41"
        ioloop = loop.new_ioloop()
        turns = _counting_turns(ioloop)
        sent_at: list[int] = []
        published_at: list[int] = []
        confirmed: list[bool] = []

        def ready(link: links.Link) -> None:
            tr = link.connection._transport
            send = tr._sigint_safe_send

            def noted_send(sock: Any, data: bytes) -> int:
                sent_at.append(turns[0])
                return int(send(sock, data))

            tr._sigint_safe_send = noted_send
            ioloop.call_later(0.05, publish)

        def publish() -> None:
            published_at.append(turns[0])
            body = relay.document(agency, ["001.00.31.H14"], subject="eager")
            link.publish(Outgoing(wire.agency_exchange(agency), "", body, wire.message_id(body),
                                  relay.names.agency_user(agency), {wire.H_KIND: wire.Kind.EDXML}),
                         lambda ok: (confirmed.append(ok), ioloop.stop()))

        link = links.Link("eager", relay.client(agency).url, ioloop, ready, lambda _l, why: ioloop.stop())
        ioloop.call_later(20, ioloop.stop)
        ioloop.start()
        link.close()
        assert confirmed == [True]
        assert sent_at and sent_at[0] == published_at[0]
    finally:
        relay.close()


def test_a_batch_of_acks_settles_together_what_is_older_than_every_other_delivery(
        tmp_path: Any, rabbitmq_urls: tuple[str, str]) -> None:
    """On the real broker: acking deliveries 1, 2, 3 and 5 of five unsettled ones sends one
    ``multiple`` ack up to 3 and a single one for 5, and leaves 4 unsettled (the broker hands it
    back when the channel closes).  A delivery requeued meanwhile no longer splits a batch."""
    from broker.core import wire
    from broker.relay.amqp import links, loop
    from tests.relay import Relay

    relay = Relay(tmp_path, *rabbitmq_urls, workers=0)
    try:
        agency = "000.00.51.H41"
        client = relay.client(agency)
        sent = [client.send(relay.document(agency, ["001.00.31.H14"], subject=f"ack {i}")) for i in range(7)]
        client.close()
        for _ in range(100):
            if relay.depth("H41", wire.Q_INGRESS) == len(sent):
                break
            time.sleep(0.1)
        ioloop = loop.new_ioloop()
        got: list[str] = []
        frames: list[tuple[int, bool]] = []

        def arrived(r: Any) -> None:
            got.append(r.message_id)
            if len(got) == 7:
                ioloop.add_callback(settle)

        def settle() -> None:
            real = consumer.channel.basic_ack
            consumer.channel.basic_ack = lambda tag, multiple=False: (frames.append((tag, multiple)),
                                                                     real(tag, multiple=multiple))
            consumer.ack_all([5, 1, 3, 2])
            consumer.requeue(6)
            consumer.ack_all([7])  # 6 was requeued: only 4 is older, so 7 goes alone
            consumer.close()
            ioloop.call_later(0.5, ioloop.stop)

        consumer = links.Consumer(relay.hub_url("H41"), wire.Q_INGRESS, 10, ioloop, arrived,
                                  lambda c: c.start(), lambda _c, why: None)
        ioloop.call_later(20, ioloop.stop)
        ioloop.start()
        assert got == sent
        assert frames == [(3, True), (5, False), (7, False)]
        left = relay.drain("H41", wire.Q_INGRESS, count=2)
        assert sorted(r.message_id for r in left) == sorted([sent[3], sent[5]])
        assert relay.depth("H41", wire.Q_INGRESS) == 0
    finally:
        relay.close()


def test_a_callback_from_a_signal_handler_wakes_the_waiting_loop() -> None:
    """A hub stops from its SIGTERM handler, which runs on the loop's own thread while ``poll``
    waits: the callback it adds must end the wait, not sit until the loop's next timer."""
    import signal
    import time

    from broker.relay.amqp import loop

    ioloop = loop.new_ioloop()
    ran: list[float] = []

    def on_alarm(*_: object) -> None:
        ioloop.add_callback_threadsafe(lambda: (ran.append(time.monotonic()), ioloop.stop()))

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        ioloop.call_later(10, ioloop.stop)  # the only timer: without a wake-up the callback waits for it
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        ioloop.start()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        ioloop.close()
    assert ran and ran[0] - started < 2


def _half_open(port: int) -> set[int]:
    """Local ports of this machine's TCP connections to ``port`` that we closed and the peer has not
    (FIN_WAIT2, from /proc/net/tcp and tcp6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, remote, state = line.split()[1:4]
                if state == "05" and int(remote.rpartition(":")[2], 16) == port:
                    ports.add(int(local.rpartition(":")[2], 16))
    return ports


def test_the_broker_ends_a_tls_connection_we_close(tmp_path: Any, rabbitmq_urls: tuple[str, str]) -> None:
    """Setting up a relay declares each hub's queues over a short TLS connection and closes it.
    Closed with a bare FIN, as pika does, the broker (RabbitMQ 3.10, Erlang/OTP 25) left one of
    them half open, its side never closed, until its heartbeat met our reset 15 s later and set
    its VM spinning a core on the dead socket.  With TLS's ``close_notify`` first, the broker ends
    every one at once (``connection.quiet_close``)."""
    import time
    from urllib.parse import urlsplit

    from tests.relay import Relay

    port = urlsplit(rabbitmq_urls[0]).port or 5671
    for n in range(3):  # the old close left one half open in two set-ups of three
        before = _half_open(port)
        relay = Relay(tmp_path / str(n), *rabbitmq_urls, workers=0)
        try:
            time.sleep(1)
            assert _half_open(port) - before == set()
        finally:
            relay.close()


class _Receiving:
    """A socket for :func:`connection.end_tls`: hands out ``chunks`` in turn, then keeps sending."""

    def __init__(self, chunks: list[bytes | OSError]) -> None:
        self.chunks = chunks
        self.reads = 0

    def settimeout(self, _seconds: float) -> None:
        pass

    def unwrap(self) -> None:
        pass

    def recv(self, _size: int) -> bytes:
        self.reads += 1
        item = self.chunks.pop(0) if self.chunks else b"more"
        if isinstance(item, OSError):
            raise item
        return item


def test_ending_tls_stops_at_the_end_of_the_stream_an_error_or_the_deadline() -> None:
    """Closing waits for the peer's end of the stream, but not past an error or the deadline."""
    import time

    ended = _Receiving([b"alert", b""])
    connection.end_tls(ended, time.monotonic() + 5)
    assert ended.reads == 2
    broken = _Receiving([ConnectionResetError(104, "reset")])
    connection.end_tls(broken, time.monotonic() + 5)
    assert broken.reads == 1
    chatty = _Receiving([])  # a peer that never stops sending
    started = time.monotonic()
    connection.end_tls(chatty, started + 0.1)
    assert chatty.reads > 1 and time.monotonic() - started < 1


def test_pika_itself_is_left_as_it_is(tmp_path: Any, rabbitmq_urls: tuple[str, str]) -> None:
    """Importing the AMQP transport and opening connections with it changes none of pika's classes:
    only lienthong's own connections write in one go and close with ``close_notify``, so an agency
    system that embeds the SDK beside pika connections of its own gets pika as pika ships."""
    import pika
    from pika.adapters.utils.io_services_utils import _AsyncSSLTransport

    from broker.relay.amqp import blocking, params, session  # noqa: F401 - all of the transport, imported
    from tests.relay import Relay

    def pikas() -> tuple[Any, ...]:
        return (_AsyncTransportBase._produce, _AsyncSSLTransport.write, _AsyncTransportBase._close_and_finalize,
                pika.SelectConnection._proto_connection_made)

    before = pikas()
    relay = Relay(tmp_path, *rabbitmq_urls, workers=0)
    try:
        with blocking.blocking(relay.hub_url("H41")) as ch:
            ours = ch.connection._impl._transport
            assert isinstance(ours, _AsyncSSLTransport)
            assert "_produce" in vars(ours) and "write" in vars(ours)  # lienthong's connection: shaped
        theirs = pika.BlockingConnection(params.parameters(relay.hub_url("H41")))
        try:
            assert "_produce" not in vars(theirs._impl._transport)  # anyone else's: pika's own
        finally:
            theirs.close()
    finally:
        relay.close()
    assert pikas() == before


def test_importing_lienthong_patches_nothing_in_pika() -> None:
    """In a fresh interpreter: every public and private function of pika's connection and transport
    classes, and of its I/O loop, is the same object before and after importing the AMQP transport,
    the SDK and the CLI (a patch at import would change one for every program that embeds the SDK)."""
    probe = """
import inspect, pika, pika.adapters.select_connection as sc, pika.adapters.blocking_connection as bc
from pika.adapters.utils import io_services_utils as io, connection_workflow as cw
def snapshot():
    out = {}
    for mod in (pika, sc, bc, io, cw):
        for name, cls in vars(mod).items():
            if inspect.isclass(cls) and cls.__module__.startswith("pika"):
                for attr, value in vars(cls).items():
                    out[f"{cls.__module__}.{name}.{attr}"] = id(value)
            elif inspect.isfunction(cls):
                out[f"{mod.__name__}.{name}"] = id(cls)
    return out
before = snapshot()
import broker.relay.amqp.blocking, broker.relay.amqp.session, broker.relay.amqp.links, adapters.sdk, broker.cli
after = snapshot()
changed = sorted(k for k in before if after.get(k) != before[k])
print(len(before), changed)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    count, changed = done.stdout.split(" ", 1)
    assert int(count) > 200, "the probe saw too little of pika to mean anything"
    assert changed.strip() == "[]", changed
