"""Hop records signed together: one signature over the Merkle root of a batch of records.

A hub under load judges its deliveries in batches (:mod:`broker.relay.batches`).  Signing each
batch's records once, as X-Road signs batches of messages, turns one ECDSA signature per record
into one per batch, and lets the hubs after it verify one signature per batch: each record
carries the path from its leaf to the root, and a root whose signature a hub has verified is
remembered by the hub that verified it (:class:`VerifiedRoots`).

The tree (RFC 6962's hashing): a leaf is ``SHA-256(0x00 || record JSON)``, a node
``SHA-256(0x01 || left || right)``; a level with an odd node out carries it up unchanged.  The
hub signs ``b"lienthong hop records v2\\n" || root``: a prefix no record JSON (``{...}``) can
start with, so a batch signature never passes for a single record's, nor one for the other.

A token of a batch is ``<JSON>.<base64url signature>.<base64url path>``; the path is one
33-byte step per level: ``0x00`` (the sibling is on the left) or ``0x01`` (on the right), then
the sibling's hash.  A record signed alone keeps ``<JSON>.<signature>`` (docs/wire.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509

from broker.core.bounded import Bounded

ROOT_PREFIX = b"lienthong hop records v2\n"
STEP = 33
LEFT, RIGHT = 0, 1
"""Where the sibling of a step stands."""
MAX_DEPTH = 16
"""Levels a path may have: 65,536 records, far beyond a batch (a longer path is refused)."""


def leaf(payload: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + payload).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree(payloads: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root of ``payloads``' tree and each payload's path to it."""
    if not payloads:
        raise ValueError("a batch holds at least one record")
    level = [leaf(p) for p in payloads]
    at = list(range(len(payloads)))  # each payload's index on the current level
    paths: list[list[bytes]] = [[] for _ in payloads]
    while len(level) > 1:
        for i, j in enumerate(at):
            sibling = j ^ 1
            if sibling < len(level):
                paths[i].append(bytes([LEFT if sibling < j else RIGHT]) + level[sibling])
            at[i] = j // 2
        level = [node(level[k], level[k + 1]) if k + 1 < len(level) else level[k] for k in range(0, len(level), 2)]
    return level[0], [b"".join(p) for p in paths]


def root_of(payload: bytes, path: bytes) -> bytes:
    """The root a payload and its path lead to; ValueError for a path that is not one."""
    if len(path) % STEP or len(path) > MAX_DEPTH * STEP:
        raise ValueError("a record's path to its batch root is malformed")
    digest = leaf(payload)
    for k in range(0, len(path), STEP):
        side, sibling = path[k], path[k + 1:k + STEP]
        if side == LEFT:
            digest = node(sibling, digest)
        elif side == RIGHT:
            digest = node(digest, sibling)
        else:
            raise ValueError("a record's path to its batch root is malformed")
    return digest


def signed_bytes(root: bytes) -> bytes:
    """What the hub's key signs for a batch."""
    return ROOT_PREFIX + root


class VerifiedRoots:
    """The batch roots whose signature a verifier has checked, so that the other records of a batch
    cost it a few hashes: a fact of mathematics, not of trust (whether the certificate is trusted
    now is judged each time, by the caller).  Each verifier keeps its own (a hub's :class:`Hop`,
    an agency's delivery check): one hub's checks never stand in for another's."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: Bounded[tuple[x509.Certificate, bytes, bytes], None] = Bounded(self.LIMIT)

    def __contains__(self, key: tuple[x509.Certificate, bytes, bytes]) -> bool:
        return key in self._seen

    def add(self, key: tuple[x509.Certificate, bytes, bytes]) -> None:
        self._seen.put(key, None)
