"""Hubs judged in-process, for tests that need no broker: the one way tests build a :class:`Hop`, the
sample agencies' signed documents, and a document carried along a route hop by hop."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from broker.core import wire
from broker.core.edxml import Organ, build_document
from broker.core.hop import Hop
from broker.core.outcome import Copy, Inbound, Outcome
from broker.core.routing import Target, TargetKind
from broker.core.signer import SigningKey, sign
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.relay.assemble import hub_certificates
from broker.settings import PkiLayout

ROUTE = ("H41", "national", "H14", "H14-D31")
"""The sample topology's longest path: a commune of Nghệ An to a commune of Cao Bằng."""
SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"


def hop(pki: Path, topology: Topology, hub: str, *, trust: TrustStore | None = None,
        key: SigningKey | None = None, certs_pki: Path | None = None, **options: Any) -> Hop:
    """Hub ``hub`` of ``topology`` with the material of dev PKI ``pki``: its trust store (or
    ``trust``), its key (or ``key``), every hub's certificate (from ``certs_pki``, default ``pki``;
    judged by the trust store at each record, as a running hub judges them); ``options`` go to
    :class:`Hop` (``limits``, ``receipts``...)."""
    trust = trust if trust is not None else TrustStore.load(pki)
    return Hop(hub=hub, topology=topology, trust=trust, key=key or SigningKey.load(*PkiLayout(pki).hub(hub)),
               hub_certs=hub_certificates(certs_pki or pki, topology), **options)


def hops(pki: Path, topology: Topology, **options: Any) -> dict[str, Hop]:
    """Every hub of ``topology``, sharing one trust store."""
    trust = TrustStore.load(pki)
    return {h: hop(pki, topology, h, trust=trust, **options) for h in topology.hubs}


def agency_key(pki: Path, organ_id: str) -> SigningKey:
    return SigningKey.load(*PkiLayout(pki).agency(organ_id))


def document(pki: Path, topology: Topology, sender: str, recipients: Sequence[str], *, subject: str = "Thử nghiệm",
             size: int = 500, signer: str | None = None, document_id: str | None = None) -> bytes:
    """A document from ``sender``, signed by ``signer``'s key (default the sender's)."""
    names = {a: topology.agencies[a].name if a in topology.agencies else a for a in (sender, *recipients)}
    doc = build_document(Organ(sender, names[sender]), [Organ(r, names[r]) for r in recipients], subject=subject,
                         attachments=[("a.pdf", "application/pdf", os.urandom(size))], document_id=document_id)
    return sign(doc, agency_key(pki, signer or sender))


def from_agency(body: bytes, agency: str) -> Inbound:
    """``body`` as agency ``agency`` hands it to its hub."""
    return Inbound(body, {}, wire.agency_exchange(agency))


def from_hub(copy: Copy, hub: str) -> Inbound:
    """A copy as hub ``hub`` forwards it to its neighbour."""
    return Inbound(copy.body, copy.headers, wire.link_exchange(hub))


def carry(hubs: Mapping[str, Hop], body: bytes, route: Sequence[str] = ROUTE, *,
          sender: str = SENDER) -> list[Outcome]:
    """The document along ``route``, each hub judging what the one before forwarded; every outcome."""
    inbound, out = from_agency(body, sender), []
    for i, hub in enumerate(route):
        outcome = hubs[hub].process(inbound)
        out.append(outcome)
        if i + 1 < len(route):
            onward = next(c for c in outcome.copies if c.target == Target(TargetKind.HUB, route[i + 1])
                          and wire.kind_of(c.headers) == wire.Kind.EDXML)
            inbound = from_hub(onward, hub)
    return out
