"""Receipts a hub issued for other hubs' agencies, held a moment so that they leave together."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.core import receipts
from broker.core.outcome import Copy
from broker.relay.transport import Confirmed, Loop


class HeldReceipts:
    """Receipts for other hubs' agencies (the copies the hop marks ``bundled``) wait up to
    ``seconds`` for more, then leave as few bundles (``bundle``: :meth:`broker.core.hop.Hop.bundle`):
    each message sent costs every hub on the way back a pass, and the broker a quorum-queue write,
    whatever it carries.  Each receipt's callback hears its bundle's confirm, so the document it
    speaks of, acked after that, is never acked before its receipt is out.  A full bundle's worth
    leaves at once."""

    def __init__(self, bundle: Callable[[Sequence[Copy]], list[tuple[Copy, list[int]]]],
                 send: Callable[[Copy, str, Confirmed], None], seconds: float) -> None:
        self._bundle = bundle
        self._send = send
        self.seconds = seconds
        self._loop: Loop | None = None
        self._held: list[tuple[Copy, Confirmed]] = []
        self._timer: object | None = None

    def reset(self, loop: Loop) -> None:
        """A new session on ``loop``: what the last one held went with its connections (its
        documents were not acked, so they come back)."""
        self._loop, self._held, self._timer = loop, [], None

    def add(self, copy: Copy, confirmed: Confirmed) -> None:
        self._held.append((copy, confirmed))

    def settle(self) -> None:
        """After a batch: send now if nothing is to be held or a bundle is full, else make sure
        the held receipts leave when their time is up."""
        if self.seconds <= 0 or len(self._held) >= receipts.MAX_BUNDLED or self._loop is None:
            self.flush()
        elif self._held and self._timer is None:
            self._timer = self._loop.call_later(self.seconds, self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Send what is held now, one bundle per neighbour and home hub."""
        if self._timer is not None and self._loop is not None:
            self._loop.cancel(self._timer)
        self._timer = None
        held, self._held = self._held, []
        for bundle, members in self._bundle([copy for copy, _ in held]) if held else ():
            self._send(bundle, "", _each([held[i][1] for i in members]))


def _each(callbacks: list[Confirmed]) -> Confirmed:
    def confirmed(ok: bool) -> None:
        for callback in callbacks:
            callback(ok)
    return confirmed
