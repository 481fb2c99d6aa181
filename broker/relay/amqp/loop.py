"""The hub worker's event loop: pika's ``IOLoop`` without two costs per callback and per write."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pika.adapters.select_connection import IOLoop, PollPoller


class Loop(IOLoop):  # type: ignore[misc]  # pika ships no types for it
    """pika's I/O loop without two costs per callback and per write.

    - A callback added from the loop's own thread (pika adds one after every read, the worker
      one per batch of deliveries) is queued without waking the poller through its interrupt
      socket (a ``send``, then a ``poll`` that returns at once and a ``recv``): the loop looks for
      queued callbacks before it waits, on this same thread.  Other threads, and a signal
      handler that runs while ``poll`` waits, still wake it.
    - ``poll`` rather than ``epoll``: turning a socket's write interest on and off, twice per
      write, is a dictionary update instead of an ``epoll_ctl`` system call; with the handful of
      sockets a worker has, ``poll`` itself costs no more.
    - What the turn's callbacks queued in their turn (the sends of the publishes a batch made,
      :func:`broker.relay.amqp.connection.eager`) runs in the same turn, once, not after another
      ``poll``.
    """

    sends_eagerly = True
    """Read by :func:`broker.relay.amqp.connection.eager`: a write may be tried from a callback,
    which is free here."""

    def __init__(self) -> None:
        super().__init__()
        self._thread: int | None = None

    @staticmethod
    def _get_poller(get_wait_seconds: Callable[[], float | None], process_timeouts: Callable[[], None]) -> _Poller:
        return _Poller(get_wait_seconds=get_wait_seconds, process_timeouts=process_timeouts)

    def start(self) -> None:
        self._thread = threading.get_ident()
        try:
            super().start()
        finally:
            self._thread = None

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        # a signal handler runs on the loop's thread too, while ``poll`` waits: that must wake it
        if self._thread == threading.get_ident() and not self._poller.waiting:
            self._callbacks.append(callback)
        else:
            super().add_callback_threadsafe(callback)

    add_callback = add_callback_threadsafe

    # -- broker.relay.transport.Loop ----------------------------------------------------------

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.add_callback(callback)

    call_threadsafe = add_callback_threadsafe

    def cancel(self, timer: object) -> None:
        self.remove_timeout(timer)

    def process_timeouts(self) -> None:
        super().process_timeouts()
        for _ in range(len(self._callbacks)):  # one more round: a callback that re-queues itself waits
            self._callbacks.popleft()()


class _Poller(PollPoller):  # type: ignore[misc]  # pika ships no types for it
    """pika's ``poll`` poller that knows when it is waiting in the system call: from the wait's
    timeout being taken until the events are dispatched, only a wake-up reaches the loop."""

    waiting = False

    def _get_max_wait(self) -> float:
        self.waiting = True
        return float(super()._get_max_wait())

    def _dispatch_fd_events(self, fd_event_map: dict[int, int]) -> None:
        self.waiting = False
        super()._dispatch_fd_events(fd_event_map)


def new_ioloop() -> Loop:
    return Loop()
