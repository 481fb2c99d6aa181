"""What a hub remembers per signer stays bounded and forgets its oldest entry first."""

from __future__ import annotations

from broker.core import sealing, trust, verifier
from broker.core.bounded import SIGNERS, Bounded


def test_the_oldest_entry_goes_first_and_only_when_full() -> None:
    cache: Bounded[str, int] = Bounded(3)
    assert [cache.put(k, i) for i, k in enumerate("abc")] == [0, 1, 2]
    cache.put("b", 10)  # held already: nothing is forgotten
    assert cache == {"a": 0, "b": 10, "c": 2}
    cache.put("d", 3)
    assert list(cache) == ["b", "c", "d"] and cache.get("a") is None
    cache.put("e", 4)
    assert list(cache) == ["c", "d", "e"] and len(cache) == cache.limit


def test_every_agency_of_the_largest_directory_is_remembered() -> None:
    """The 2019 directory's 12,510 agencies and the hubs fit, at the national hub that meets them
    all: a certificate or a judged path is not worked out again for each document."""
    assert SIGNERS > 12_510 + 35
    assert verifier._CERTS.limit == SIGNERS and trust._DERS.limit == SIGNERS
    store = trust.TrustStore(anchors=())
    assert store._paths.limit == SIGNERS and store._refused.limit == SIGNERS
    roots = sealing.VerifiedRoots()
    for i in range(sealing.VerifiedRoots.LIMIT + 1):
        roots.add((None, i.to_bytes(4, "big"), b""))  # type: ignore[arg-type]
    assert (None, (0).to_bytes(4, "big"), b"") not in roots and (None, (1).to_bytes(4, "big"), b"") in roots
