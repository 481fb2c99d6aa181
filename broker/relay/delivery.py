"""One delivery taken from a hub's ingress, and where it is in its life.

The hub worker's pipeline (:mod:`broker.relay.pipeline`) moves each delivery through these stages;
:data:`NEXT` lists the moves allowed, and :meth:`Delivery.move` refuses any other, so a delivery
can never be acked twice, or acked and requeued::

    RECEIVED -> JUDGED -> ADMITTED -> PUBLISHED -> CONFIRMED -> MARKED -> ACKED
                   \\          \\ (a duplicate: nothing new) ----------------> ACKED
                    \\          \\-> RETRIED (a transient failure) -> ACKED once the tier has it
                     \\-> PUBLISHED (a receipt passing through: nothing to claim)
    any stage before ACKED -> REQUEUED (a lost connection, a refused publish, a hop that failed)

A refusal is no stage of its own: the hop's outcome is then a refusal (parked, the sender told),
published and acked like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from broker.core.outcome import Copy, Inbound, Outcome
from broker.relay.store import ClaimState
from broker.relay.transport import Received


class Stage(Enum):
    RECEIVED = "received"
    """Taken from the ingress, waiting in a batch."""
    JUDGED = "judged"
    """The hop decided: :attr:`Delivery.outcome`."""
    ADMITTED = "admitted"
    """Its verdict recorded and its copies claimed in the state store: :attr:`Delivery.claims`."""
    PUBLISHED = "published"
    """Its new copies handed to the broker (receipts among them may wait to leave in a bundle)."""
    CONFIRMED = "confirmed"
    """The broker confirmed every copy."""
    MARKED = "marked"
    """Its claims marked confirmed in the store: a redelivery finds them done."""
    ACKED = "acked"
    """Settled with the broker: done."""
    RETRIED = "retried"
    """Sent to a retry tier (acked once the broker confirmed it there)."""
    REQUEUED = "requeued"
    """Handed back to the broker, which delivers it again."""


NEXT: dict[Stage, frozenset[Stage]] = {
    Stage.RECEIVED: frozenset({Stage.JUDGED, Stage.REQUEUED}),
    Stage.JUDGED: frozenset({Stage.ADMITTED, Stage.PUBLISHED, Stage.RETRIED, Stage.REQUEUED}),
    Stage.ADMITTED: frozenset({Stage.PUBLISHED, Stage.ACKED, Stage.RETRIED, Stage.REQUEUED}),
    Stage.PUBLISHED: frozenset({Stage.CONFIRMED, Stage.REQUEUED}),
    Stage.CONFIRMED: frozenset({Stage.MARKED, Stage.REQUEUED}),
    Stage.MARKED: frozenset({Stage.ACKED, Stage.REQUEUED}),
    Stage.RETRIED: frozenset({Stage.ACKED, Stage.REQUEUED}),
    Stage.ACKED: frozenset(),
    Stage.REQUEUED: frozenset(),
}
"""The moves a delivery may make from each stage."""


class StageError(AssertionError):
    """A delivery was moved where its life cycle does not go: a bug in the pipeline."""


@dataclass(eq=False)
class Delivery:
    """A delivery and everything the pipeline learns about it."""

    received: Received
    inbound: Inbound
    """What the hop judges: the body, the headers the hub may act on, the entry exchange."""
    arrived: float
    """``time.perf_counter()`` when it was taken from the queue (the hop's time counts from here)."""
    stage: Stage = Stage.RECEIVED
    outcome: Outcome | None = None
    claims: dict[str, ClaimState] | None = None
    publishing: tuple[Copy, ...] = ()
    """The copies published (not those the store says went out already)."""
    unconfirmed: int = 0
    """Copies handed to the broker and not yet confirmed."""
    failed: bool = False
    """A copy was refused or lost: the delivery goes back to the queue."""
    marked: set[str] = field(default_factory=set)
    """Claims marked confirmed already (while the delivery's receipts wait to leave in a bundle)."""
    holds: set[tuple[str, str]] = field(default_factory=set)
    """(digest, claim) keys this delivery holds in the worker's in-flight set."""

    @property
    def tag(self) -> int:
        return self.received.delivery_tag

    @property
    def origin(self) -> str:
        return self.inbound.origin

    @property
    def judged(self) -> Outcome:
        """The hop's outcome (only once judged)."""
        if self.outcome is None:
            raise StageError(f"delivery {self.tag} has no outcome at stage {self.stage.value}")
        return self.outcome

    @property
    def done(self) -> bool:
        return self.stage in (Stage.ACKED, Stage.REQUEUED)

    def move(self, to: Stage) -> None:
        if to not in NEXT[self.stage]:
            raise StageError(f"delivery {self.tag}: {self.stage.value} -> {to.value} is not a move of its life")
        self.stage = to
