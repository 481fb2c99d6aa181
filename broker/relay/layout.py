"""The RabbitMQ layout derived from the topology: vhosts, exchanges, queues, users, permissions.

Pure data; ``lienthong broker setup`` applies it (``broker.relay.provision``).

Per hub, one vhost ``<namespace>.<hub>`` (namespace ``lienthong`` by default) holding:

- ``in.<agency code>`` per attached agency and ``in.link.<hub>`` per neighbouring
  hub (fanout exchanges) -> ``ingress`` (quorum queue).  Each account may
  publish only to its own entry exchange, so the exchange a message arrived
  through says who handed it in, whatever client (and properties) was used.
  ``x-delivery-limit`` parks a message that keeps crashing workers.
- ``ingress`` (fanout) -> ``ingress``: only the retry tiers dead-letter into it.
- ``inbox`` (direct, key = agency code) -> ``inbox.<code>`` (quorum), one per
  agency attached to this hub.
- ``retry`` (direct) -> ``retry.<tier>`` queues with one fixed TTL each,
  dead-lettering back into ``ingress``.
- ``parking`` (fanout) -> ``parking`` (quorum): rejected and exhausted messages,
  with ``lt-code`` / ``lt-reason`` headers.
- ``unroutable`` (fanout) -> ``unroutable``: the alternate exchange of
  ``ingress`` and ``inbox``, so a message never vanishes for lack of a binding.

Every move the broker makes on its own is at-least-once: a retry tier's expiry back into
``ingress`` and the delivery limit's move into ``parking`` are dead-lettering, which quorum queues
do at-most-once unless told otherwise (a message dead-lettered while its target cannot take it, or
around a broker stop, is dropped).  The policy :func:`reliability_policy` sets
``dead-letter-strategy: at-least-once`` (and the ``overflow: reject-publish`` it requires) on those
queues: the source queue keeps each message until the target queue has confirmed it.  A policy,
not queue arguments, because RabbitMQ never changes a queue's arguments after it is declared: a
policy upgrades a running deployment in place, its queues and what they hold untouched.

Users: ``hub.<hub>`` (everything in its own vhost), ``link.<hub>`` (publish
only to ``in.link.<hub>`` of each neighbouring hub), and one user per agency
(publish only to ``in.<code>`` of its hub, read only its own inbox).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from broker.core.topology import Topology
from broker.core.wire import (
    EX_INBOX,
    EX_INGRESS,
    EX_PARKING,
    EX_RETRY,
    EX_UNROUTABLE,
    Q_INGRESS,
    Q_PARKING,
    Q_UNROUTABLE,
    agency_exchange,
    inbox_queue,
    link_exchange,
    names,
    retry_queue,
)

RETRY_TIERS: tuple[tuple[str, int], ...] = (("r1s", 1_000), ("r10s", 10_000), ("r60s", 60_000))
"""Default back-off tiers (name, TTL in ms); a topology may set ``settings.retry_tiers_ms``."""


def retry_tiers(topology: Topology) -> tuple[tuple[str, int], ...]:
    """The retry tiers of this deployment: one queue with one fixed TTL per tier."""
    custom = topology.settings.get("retry_tiers_ms")
    if not custom:
        return RETRY_TIERS
    return tuple((f"r{int(ms)}ms", int(ms)) for ms in custom)
DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str = ""


@dataclass(frozen=True)
class Policy:
    """A RabbitMQ policy of one vhost (``apply-to: queues``)."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int


RELIABILITY_POLICY = "lienthong-at-least-once"
AT_LEAST_ONCE = {"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}


def reliability_policy() -> Policy:
    """At-least-once dead-lettering for the queues that dead-letter: ``ingress`` and the retry tiers."""
    return Policy(RELIABILITY_POLICY, f"^({re.escape(Q_INGRESS)}|retry\\..+)$", dict(AT_LEAST_ONCE), 100)


def dead_lettering_queues(topology: Topology) -> list[str]:
    """The queues that move messages by dead-lettering, in declaration order."""
    return [Q_INGRESS] + [retry_queue(tier) for tier, _ in retry_tiers(topology)]


def effective_policy(policies: list[dict[str, Any]], queue: str) -> dict[str, Any] | None:
    """The policy RabbitMQ applies to ``queue`` among ``policies`` (as the management API lists
    them): the one of highest priority whose pattern matches the name and that applies to queues."""
    matching = [p for p in policies if p.get("apply-to", "all") in ("all", "queues")
                and re.search(str(p["pattern"]), queue)]
    return max(matching, key=lambda p: int(p.get("priority", 0)), default=None)


@dataclass(frozen=True)
class Permission:
    vhost: str
    user: str
    configure: str
    write: str
    read: str


def declarations(topology: Topology, hub_id: str) -> list[Exchange | Queue | Binding]:
    """Everything to declare in the vhost of ``hub_id``, in order."""
    quorum = {"x-queue-type": "quorum"}
    out: list[Exchange | Queue | Binding] = [
        Exchange(EX_UNROUTABLE, "fanout"),
        Queue(Q_UNROUTABLE, dict(quorum)),
        Binding(EX_UNROUTABLE, Q_UNROUTABLE),
        Exchange(EX_INGRESS, "fanout", {"alternate-exchange": EX_UNROUTABLE}),
        Exchange(EX_INBOX, "direct", {"alternate-exchange": EX_UNROUTABLE}),
        Exchange(EX_RETRY, "direct"),
        Exchange(EX_PARKING, "fanout"),
        Queue(Q_PARKING, dict(quorum)),
        Binding(EX_PARKING, Q_PARKING),
        Queue(Q_INGRESS, {**quorum, "x-delivery-limit": DELIVERY_LIMIT,
                          "x-dead-letter-exchange": EX_PARKING}),
        Binding(EX_INGRESS, Q_INGRESS),
    ]
    for other in topology.neighbours(hub_id):
        out += [Exchange(link_exchange(other), "fanout", {"alternate-exchange": EX_UNROUTABLE}),
                Binding(link_exchange(other), Q_INGRESS)]
    for tier, ttl in retry_tiers(topology):
        out += [Queue(retry_queue(tier), {**quorum, "x-message-ttl": ttl,
                                          "x-dead-letter-exchange": EX_INGRESS}),
                Binding(EX_RETRY, retry_queue(tier), tier)]
    for agency in topology.agencies.values():
        if agency.hub == hub_id:
            out += [Exchange(agency_exchange(agency.organ_id), "fanout", {"alternate-exchange": EX_UNROUTABLE}),
                    Binding(agency_exchange(agency.organ_id), Q_INGRESS),
                    Queue(inbox_queue(agency.organ_id), dict(quorum)),
                    Binding(EX_INBOX, inbox_queue(agency.organ_id), agency.organ_id)]
    return out


def permissions(topology: Topology) -> list[Permission]:
    n = names(topology)
    out: list[Permission] = []
    for hub in topology.hubs.values():
        out.append(Permission(n.vhost(hub.hub_id), n.hub_user(hub.hub_id), ".*", ".*", ".*"))
        for other in topology.neighbours(hub.hub_id):
            out.append(Permission(n.vhost(other), n.link_user(hub.hub_id), "^$",
                                  f"^{re.escape(link_exchange(hub.hub_id))}$", "^$"))
    for agency in topology.agencies.values():
        out.append(Permission(n.vhost(agency.hub), n.agency_user(agency.organ_id), "^$",
                              f"^{re.escape(agency_exchange(agency.organ_id))}$",
                              f"^{re.escape(inbox_queue(agency.organ_id))}$"))
    return out


def users(topology: Topology) -> list[str]:
    n = names(topology)
    return ([n.hub_user(h) for h in topology.hubs] + [n.link_user(h) for h in topology.hubs]
            + [n.agency_user(a) for a in topology.agencies])


def amqp_url(topology: Topology, hub_id: str, user: str, password: str) -> str:
    """The URL for ``user`` on the broker of ``hub_id``, in that hub's vhost (for a cluster, one
    per node, separated by spaces)."""
    vh = quote(names(topology).vhost(hub_id), safe="")
    out = []
    for url in topology.hubs[hub_id].amqp_url.split():
        base = urlsplit(url)
        host = base.hostname or "127.0.0.1"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{base.port or 5672}"
        out.append(urlunsplit((base.scheme or "amqp", netloc, "/" + vh, base.query, "")))
    return " ".join(out)


def admin_url(topology: Topology, hub_id: str) -> str:
    """The topology's (admin) URL of the hub's broker, pointed at the hub's vhost."""
    vh = quote(names(topology).vhost(hub_id), safe="")
    return " ".join(urlunsplit((b.scheme, b.netloc, "/" + vh, b.query, ""))
                    for b in map(urlsplit, topology.hubs[hub_id].amqp_url.split()))
