"""The RabbitMQ layout derived from the topology: vhosts, exchanges, queues, users, permissions,
and the URLs each account connects with.

Declarations are plain data, which ``lienthong broker setup`` applies (``broker.relay.provision``);
an account's URL names its user from its client certificate, read from the PKI directory.

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
- ``outbound`` (direct, key = neighbouring hub) -> ``out.<hub>`` (quorum), one per
  neighbour: what the hub could not hand to a neighbour whose broker was away waits
  there, judged and claimed, until the link is back (``broker.relay.outbound``).
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
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from broker.core.errors import ConfigError
from broker.core.topology import Topology
from broker.core.wire import (
    EX_INBOX,
    EX_INGRESS,
    EX_OUTBOUND,
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
    outbound_queue,
    retry_queue,
)
from broker.i18n import N_
from broker.relay.retry import RetryPolicy


def retry_tiers(topology: Topology) -> tuple[tuple[str, int], ...]:
    """The retry tiers of this deployment (:class:`broker.relay.retry.RetryPolicy`): one queue with
    one fixed TTL per tier."""
    return RetryPolicy.from_ms(topology.settings.retry_tiers_ms).tiers
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
    out.append(Exchange(EX_OUTBOUND, "direct", {"alternate-exchange": EX_UNROUTABLE}))
    for other in topology.neighbours(hub_id):
        out += [Exchange(link_exchange(other), "fanout", {"alternate-exchange": EX_UNROUTABLE}),
                Binding(link_exchange(other), Q_INGRESS),
                Queue(outbound_queue(other), dict(quorum)),  # no delivery limit: an outage may last
                Binding(EX_OUTBOUND, outbound_queue(other), other)]
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


def _tls_urls(topology: Topology, hub_id: str, netloc_user: str, query: dict[str, str]) -> str:
    """The hub's broker URLs (one per node of a cluster) pointed at the hub's vhost, over TLS."""
    vh = quote(names(topology).vhost(hub_id), safe="")
    out = []
    for url in topology.hubs[hub_id].amqp_url.split():
        base = urlsplit(url)
        if base.scheme != "amqps":
            raise ConfigError(N_("hub {hub}'s amqp_url {scheme}://{hostname}:{port} is plain AMQP: lienthong "
                                 "connects only with TLS (amqps://, port 5671)"), hub=hub_id, scheme=base.scheme,
                              hostname=base.hostname, port=base.port or '')
        netloc = f"{netloc_user}{base.hostname or '127.0.0.1'}:{base.port or 5671}"
        out.append(urlunsplit(("amqps", netloc, "/" + vh, urlencode(query), "")))
    return " ".join(out)


def account_url(topology: Topology, hub_id: str, account: tuple[Path, Path], ca: Path) -> str:
    """The URL of a broker account (hub, link or agency) on the broker of ``hub_id``, in that hub's
    vhost: TLS verified against ``ca``, logging in with the account's client certificate
    (``account``: key, certificate), whose common name is the user (written in the URL too, for
    the ``user_id`` of what the account publishes).  The account has no password."""
    key, cert = account
    user = account_user(cert)
    return _tls_urls(topology, hub_id, f"{quote(user, safe='')}@",
                     {"cacertfile": str(ca), "certfile": str(cert), "keyfile": str(key), "auth_mechanism": "external"})


def account_user(cert_path: Path) -> str:
    """The broker user a client certificate logs in as (its common name)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        raise ConfigError(N_("no client certificate for this broker account at {path}: issue one with 'lienthong pki "
                             "issue'"), path=cert_path) from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError(N_("the client certificate {path} names no user (no common name)"), path=cert_path)
    return str(names[0].value)


def admin_url(topology: Topology, hub_id: str, mgmt_url: str, ca: Path) -> str:
    """The URL of the broker's admin account (the management URL's user and password), over TLS,
    in the hub's vhost: for declaring its queues."""
    parts = urlsplit(mgmt_url)
    if not parts.username:
        raise ConfigError(N_("the management URL names no admin account (http://USER:PASSWORD@host:15672)"))
    user = f"{quote(unquote(parts.username), safe='')}:{quote(unquote(parts.password or ''), safe='')}@"
    return _tls_urls(topology, hub_id, user, {"cacertfile": str(ca)})
