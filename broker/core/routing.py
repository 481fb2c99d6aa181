"""Routing over the hub tree: up to the lowest common ancestor, then down to each recipient's hub.

Pure functions of the topology.  A hub asks :func:`next_hops` which
neighbours (or local inboxes) get a copy of a message, and for which of its
recipients; a document to several agencies fans out where routes split.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from broker.core.errors import UnknownRecipient
from broker.core.topology import Topology
from broker.i18n import N_


class TargetKind(StrEnum):
    HUB = "hub"
    """A neighbouring hub's ingress."""
    INBOX = "inbox"
    """The inbox of an agency of this hub."""
    PARKING = "parking"
    """This hub's parking queue: refused messages, with their code and reason."""


@dataclass(frozen=True, order=True)
class Target:
    """Where a copy goes next: another hub's ingress, a local agency inbox, or parking."""

    kind: TargetKind
    name: str
    """The hub id or the agency code (``parking`` for parking)."""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


PARKING = Target(TargetKind.PARKING, "parking")


def next_hop(topology: Topology, at_hub: str, to_hub: str) -> Target:
    """The neighbour of ``at_hub`` on the tree path towards ``to_hub``."""
    if at_hub == to_hub:
        raise ValueError("already at the destination hub")
    down = topology.path_to_root(to_hub)  # to_hub, parent, ..., root
    if at_hub in down:
        return Target(TargetKind.HUB, down[down.index(at_hub) - 1])  # the child on the way down
    parent = topology.hubs[at_hub].parent
    assert parent is not None, "the root is an ancestor of every hub"
    return Target(TargetKind.HUB, parent)


def next_hops(topology: Topology, at_hub: str, recipients: tuple[str, ...]) -> dict[Target, tuple[str, ...]]:
    """Group ``recipients`` by where the copy for each goes from ``at_hub``, each named as the
    message names it: a former code goes to the agency that carries it now (``inbox:<its code>``)."""
    out: dict[Target, list[str]] = {}
    for organ_id in recipients:
        agency = topology.agencies.get(topology.current_code(organ_id))  # a former code: the agency carrying it
        if agency is None:
            raise UnknownRecipient(N_("recipient {agency!r} is not in the agency directory"), agency=organ_id)
        target = (Target(TargetKind.INBOX, agency.organ_id) if agency.hub == at_hub
                  else next_hop(topology, at_hub, agency.hub))
        out.setdefault(target, []).append(organ_id)
    return {t: tuple(r) for t, r in sorted(out.items())}


def route(topology: Topology, from_hub: str, to_hub: str) -> list[str]:
    """The whole hub path from ``from_hub`` to ``to_hub`` (both included)."""
    path = [from_hub]
    while path[-1] != to_hub:
        path.append(next_hop(topology, path[-1], to_hub).name)
    return path
