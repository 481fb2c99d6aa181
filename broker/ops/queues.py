"""Operations: what is flowing and what is stuck (``lienthong status``), and the parking queue
(``lienthong dlq``).  Reads RabbitMQ's management API and AMQP; changes nothing but the
parking queue, and only when asked.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from broker.core import wire
from broker.core.errors import LienthongError
from broker.core.topology import Hub, Topology
from broker.core.wire import H_ATTEMPT, H_CODE, H_HUB, H_ORIGIN, H_REASON, H_REPLAY
from broker.i18n import N_, _
from broker.relay import layout
from broker.relay.amqp import blocking
from broker.relay.assemble import topology_in_force
from broker.relay.provision import for_hub, q
from broker.relay.transport import Received
from broker.settings import Settings


@dataclass
class QueueStatus:
    name: str
    messages: int
    unacked: int
    consumers: int
    in_rate: float
    out_rate: float
    oldest_seconds: float | None = None
    """Age of the message at the head (inboxes and parking; None: empty or not looked at)."""


@dataclass
class HubStatus:
    hub: str
    tier: str
    ingress: QueueStatus | None
    parked: int
    unroutable: int
    retrying: int
    inboxes: list[QueueStatus] = field(default_factory=list)
    cert_days_left: int | None = None
    warnings: list[str] = field(default_factory=list)
    outbound: list[QueueStatus] = field(default_factory=list)
    """Copies waiting for a neighbour whose broker was away (``out.<neighbour>``)."""
    unreadable: str = ""
    """Why this hub's broker could not be read from here (another operator's, or unreachable):
    the other figures are then unknown, not zero."""


def _queue(raw: dict[str, Any]) -> QueueStatus:
    stats = raw.get("message_stats") or {}
    return QueueStatus(raw["name"], int(raw.get("messages") or 0), int(raw.get("messages_unacknowledged") or 0),
                       int(raw.get("consumers") or 0),
                       float((stats.get("publish_details") or {}).get("rate", 0.0)),
                       float((stats.get("deliver_get_details") or {}).get("rate", 0.0)))


def _days_left(path: Path, now: datetime) -> int | None:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return (cert.not_valid_after_utc - now).days


LOOK_PAUSES = (1.0,)
"""A status reads each broker with one second try at most: a broker that is away is reported as
such at once, not after the patience of a set-up (15 s a hub)."""


def status(settings: Settings) -> list[HubStatus]:
    """Each hub's queues (management API), head ages (a look at the head message of each
    non-empty inbox and the parking queue), certificate expiry; with warnings by the
    thresholds of ``settings.alerts`` in the topology (in the current language).  A hub whose
    broker cannot be read with this deployment's admin account (another operator's broker, or
    one that is away) is listed with the reason, its figures unknown."""
    topology = topology_in_force(settings)
    now = datetime.now(UTC)
    out = []
    nodes: dict[str, list[dict[str, Any]]] = {}  # per broker (management API), read once
    for hub in topology.hubs.values():
        try:
            out.append(_hub_status(settings, topology, hub, nodes, now))
        except LienthongError as exc:
            out.append(HubStatus(hub=hub.hub_id, tier=hub.tier, ingress=None, parked=0, unroutable=0, retrying=0,
                                 unreadable=exc.line(_),
                                 warnings=[_("the broker of {hub} cannot be read from here: {reason}",
                                             hub=hub.hub_id, reason=exc.line(_))]))
    return out


def _hub_status(settings: Settings, topology: Topology, hub: Hub, nodes: dict[str, list[dict[str, Any]]],
                now: datetime) -> HubStatus:
    limits = topology.settings.alerts
    names = wire.names(topology)
    m = for_hub(hub.management_url, settings.mgmt_url, pauses=LOOK_PAUSES)
    if m.base not in nodes:
        nodes[m.base] = m.get("/api/nodes") or []
    queues = {r["name"]: _queue(r) for r in m.get(f"/api/queues/{q(names.vhost(hub.hub_id))}") or []}
    # the ingress has a delivery limit: never look at its head (a look counts as a delivery)
    look = [k for k, v in queues.items() if v.messages and (k.startswith("inbox.") or k == wire.Q_PARKING)]
    if look:
        for name, age in blocking.head_ages(_hub_url(settings, topology, hub.hub_id), look).items():
            queues[name].oldest_seconds = age
    st = HubStatus(
        hub=hub.hub_id, tier=hub.tier, ingress=queues.get(wire.Q_INGRESS),
        parked=queues[wire.Q_PARKING].messages if wire.Q_PARKING in queues else 0,
        unroutable=queues[wire.Q_UNROUTABLE].messages if wire.Q_UNROUTABLE in queues else 0,
        retrying=sum(v.messages for k, v in queues.items() if k.startswith("retry.")),
        inboxes=sorted((v for k, v in queues.items() if k.startswith("inbox.")), key=lambda v: v.name),
        outbound=sorted((v for k, v in queues.items() if k.startswith(wire.outbound_queue(""))),
                        key=lambda v: v.name),
        cert_days_left=_days_left(settings.keys.hub(hub.hub_id)[1], now))
    if st.ingress is None:
        st.warnings.append(_("no ingress queue: run 'lienthong broker setup'"))
    elif st.ingress.consumers == 0:
        st.warnings.append(_("no worker consumes the ingress"))
    if limits.exceeded(wire.Q_PARKING, st.parked):
        st.warnings.append(_("{n} parked message(s)", n=st.parked))
    if st.ingress and limits.exceeded(wire.Q_INGRESS, st.ingress.messages):
        st.warnings.append(_("backlog of {n} in the ingress", n=st.ingress.messages))
    for box in st.inboxes:
        if limits.exceeded(box.name, box.messages):
            st.warnings.append(_("{n} message(s) wait in {queue}", n=box.messages, queue=box.name))
        if limits.too_old(box.name, box.oldest_seconds) and box.oldest_seconds is not None:
            st.warnings.append(_("the oldest message in {queue} waits for {age}", queue=box.name,
                                 age=format_age(box.oldest_seconds)))
    for box in st.outbound:
        if box.messages:
            st.warnings.append(_("{n} message(s) wait for {neighbour}, whose broker is away", n=box.messages,
                                 neighbour=box.name.removeprefix(wire.outbound_queue(""))))
    for node in nodes[m.base]:
        for what, used, total in limits.broker_near_limits(node):
            st.warnings.append(_(BROKER_LIMITS[what], node=node.get("name", "?"), used=used, total=total))
    if st.cert_days_left is not None and st.cert_days_left < limits.certificate_days:
        st.warnings.append(_("hub certificate expires in {n} day(s)", n=st.cert_days_left))
    for agency in topology.agencies.values():
        if agency.hub == hub.hub_id:
            days = _days_left(settings.keys.agency(agency.organ_id)[1], now)
            if days is not None and days < limits.certificate_days:
                st.warnings.append(_("certificate of {agency} expires in {n} day(s)", agency=agency.organ_id,
                                     n=days))
    return st


BROKER_LIMITS = {
    "fd": N_("broker {node} uses {used} of its {total} file descriptors"),
    "sockets": N_("broker {node} uses {used} of its {total} sockets"),
    "proc": N_("broker {node} runs {used} of its {total} Erlang processes"),
}
AGE_UNITS = ((N_("{n} d"), 86400), (N_("{n} h"), 3600), (N_("{n} min"), 60), (N_("{n} s"), 1))


def format_age(seconds: float) -> str:
    """An age in its largest whole unit, in the current language."""
    unit, size = next(((u, n) for u, n in AGE_UNITS if seconds >= n), AGE_UNITS[-1])
    return _(unit, n=round(seconds / size))


def as_dicts(items: list[HubStatus]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]


# --- parking queue ------------------------------------------------------------------------


@dataclass
class Parked:
    hub: str
    digest: str
    code: str
    reason: str
    origin: str
    size: int
    headers: dict[str, Any]
    body: bytes = field(repr=False)


def _hub_url(settings: Settings, topology: Topology, hub: str) -> str:
    """The hub's own broker account: operator commands run on the hub's host, with its material."""
    return layout.account_url(topology, hub, settings.keys.hub_account(hub, "hub"), settings.keys.broker_ca)


def _parked(hub: str, r: Received) -> Parked:

    h = r.headers
    deaths = h.get("x-death") or []
    code = str(h.get(H_CODE) or (deaths[0].get("reason") if deaths else "") or "")
    return Parked(hub, wire.message_id(r.body), code, str(h.get(H_REASON) or ""),
                  str(h.get(H_ORIGIN) or ""), len(r.body), h, r.body)


def list_parked(settings: Settings, hub: str, limit: int = 1000) -> list[Parked]:
    topology = topology_in_force(settings)
    got: list[Parked] = []

    def look(r: Received) -> bool:
        got.append(_parked(hub, r))
        return False  # leave it parked

    blocking.fetch(_hub_url(settings, topology, hub), wire.Q_PARKING, look, limit=limit)
    return got


def take_parked(settings: Settings, hub: str, select: Any, act: Any, limit: int = 1000) -> int:
    """Take parked messages ``select`` accepts; ``act(parked)`` runs before each ack."""
    topology = topology_in_force(settings)

    def on(r: Received) -> bool:
        p = _parked(hub, r)
        if not select(p):
            return False
        act(p)
        return True

    return blocking.fetch(_hub_url(settings, topology, hub), wire.Q_PARKING, on, limit=limit)


def replay(settings: Settings, hub: str, select: Any) -> int:
    """Put parked messages back through the full hop at ``hub`` (each taken from parking once)."""
    topology = topology_in_force(settings)
    url = _hub_url(settings, topology, hub)
    names = wire.names(topology)
    publisher = blocking.Publisher(url)

    def act(p: Parked) -> None:
        headers = {k: v for k, v in wire.without_broker_headers(p.headers).items()
                   if k not in (H_CODE, H_REASON, H_HUB, H_ATTEMPT, wire.H_RETRIES)}
        headers[H_REPLAY] = uuid.uuid4().hex  # a replay may be parked again, as a new event
        publisher.publish(wire.EX_INGRESS, "", p.body, message_id=p.digest, user_id=names.hub_user(hub),
                          headers=headers)

    try:
        return take_parked(settings, hub, select, act)
    finally:
        publisher.close()
