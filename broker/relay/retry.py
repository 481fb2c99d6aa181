"""When a transient failure (the state store unavailable, another worker holding a claim) sends a
delivery to a retry tier, and when the retries have run out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.core import wire

RETRY_TIERS: tuple[tuple[str, int], ...] = (("r1s", 1_000), ("r10s", 10_000), ("r60s", 60_000))
"""Default back-off tiers (name, TTL in ms); a topology may set ``settings.retry_tiers_ms``."""


@dataclass(frozen=True)
class Retry:
    """Send the delivery to ``tier`` with these headers."""

    tier: str
    headers: dict[str, Any]


@dataclass(frozen=True)
class Exhausted:
    """Every tier was tried: the delivery is refused (``RETRY_EXHAUSTED``), parked and its sender
    told, like any other refusal.  ``series`` names this series of retries, so that the refusal
    is published once however often this delivery comes back."""

    series: str


@dataclass(frozen=True)
class RetryPolicy:
    """Fixed back-off tiers, one queue each with one TTL (``broker.relay.layout``), tried in order.
    The tier count travels in ``lt-attempt``, the delivery's first entry in ``lt-origin`` and the
    series in ``lt-retries``: headers only the hub writes (``wire.HUB_ONLY``)."""

    tiers: tuple[tuple[str, int], ...] = RETRY_TIERS

    @classmethod
    def from_ms(cls, tiers_ms: tuple[int, ...]) -> RetryPolicy:
        """Tiers named by their TTL (``settings.retry_tiers_ms``); none given: the defaults."""
        return cls(tuple((f"r{int(ms)}ms", int(ms)) for ms in tiers_ms) or RETRY_TIERS)

    def next(self, headers: Mapping[str, Any], origin: str) -> Retry | Exhausted:
        """Where a delivery with these (trusted) headers, handed in by ``origin``, goes now."""
        attempt = int(headers.get(wire.H_ATTEMPT, 0) or 0)
        series = str(headers.get(wire.H_RETRIES) or uuid.uuid4().hex[:16])
        if attempt >= len(self.tiers):
            return Exhausted(series)
        keep = wire.without_broker_headers(headers)
        keep.update({wire.H_ORIGIN: origin, wire.H_ATTEMPT: attempt + 1, wire.H_RETRIES: series})
        return Retry(self.tiers[attempt][0], keep)
