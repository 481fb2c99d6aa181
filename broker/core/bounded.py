"""A dictionary of remembered answers that forgets its oldest entry when full.

The verifier's certificates, the trust store's judged paths, the batch roots a hub has checked:
each remembers one entry per signer (or batch), and a hub of the national tier meets every
agency of the country.  Clearing the whole dictionary when it is full, as these did, makes a
working set a little larger than the bound miss on a quarter of its lookups or more (4,145
agencies against 4,096 certificates remembered); forgetting the oldest entry keeps the rest.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

SIGNERS = 16_384
"""Bound for what is remembered per signer: more than the 12,510 agencies of the 2019 directory
and the hubs."""


class Bounded(dict[K, V]):
    """A ``dict`` (lookups at its own speed) whose :meth:`put` drops the oldest entry first when
    ``limit`` entries are held."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> V:
        if key not in self and len(self) >= self.limit:
            del self[next(iter(self))]
        self[key] = value
        return value
