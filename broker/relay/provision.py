"""``lienthong broker setup``: apply the layout of the topology to RabbitMQ, idempotently.

Vhosts, users and permissions go through the management HTTP API (as the admin account the
management URL names); exchanges, queues and bindings through AMQP over TLS.  Hub, link and agency
accounts have no password: they log in only with their client certificate over TLS (RabbitMQ's
EXTERNAL mechanism, the user named by the certificate's common name), so none can log in over
plain AMQP and no shared secret crosses the wire or sits in a common file.  Running setup twice
changes nothing.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from broker.core import wire
from broker.core.errors import ConfigError, TransientError
from broker.core.topology import Topology
from broker.i18n import N_
from broker.logs import get_logger
from broker.relay import layout
from broker.relay.amqp import blocking

log = get_logger(__name__)


class Management:
    """A minimal client of the RabbitMQ management API."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        if not parts.username:
            raise ConfigError(N_("the management URL {base} names no admin account (http://USER:PASSWORD@host:15672; "
                                 "scripts/ensure-rabbitmq.sh makes one)"), base=self.base)
        user, password = unquote(parts.username), unquote(parts.password or "")
        self.user = user
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        """One call; ``missing_ok``: a 404 (deleting what is gone already) is no error."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": self._auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            raise ConfigError(N_("management API {method} {path}: HTTP {status} {body!r}"), method=method, path=path,
                              status=exc.code, body=exc.read()[:200]) from None
        except OSError as exc:
            raise TransientError(N_("management API at {base} unreachable: {reason}"), base=self.base,
                                 reason=exc) from None
        return json.loads(raw) if raw else None

    def put(self, path: str, body: Any) -> None:
        self.request("PUT", path, body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)


def for_hub(hub_url: str, default_url: str) -> Management:
    """The management API of a hub's broker: its own URL (topology ``management_url``) if it has
    one, with the admin account of ``default_url`` (the deployment's, kept out of the topology)
    unless that URL names its own."""
    if not hub_url:
        return Management(default_url)
    hub, admin = urlsplit(hub_url), urlsplit(default_url)
    if hub.username or not admin.username:
        return Management(hub_url)
    return Management(hub._replace(netloc=f"{admin.netloc.rpartition('@')[0]}@{hub.netloc}").geturl())


def q(name: str) -> str:
    return quote(name, safe="")


def apply(topology: Topology, default_mgmt_url: str, broker_ca: Path) -> dict[str, int]:
    """Every hub's objects, each on its own broker (``management_url`` of the hub, else
    ``default_mgmt_url``): the development default, where one admin reaches every broker.  An
    operator of one hub uses :func:`setup_hub` alone.  Returns counts of what was applied."""
    counts: dict[str, int] = {}
    mgmts: dict[str, Management] = {}
    for hub_id in topology.hubs:
        url = topology.hubs[hub_id].management_url or default_mgmt_url
        m = mgmts.setdefault(url, for_hub(url, default_mgmt_url))
        for k, v in setup_hub(topology, hub_id, m, broker_ca).items():
            counts[k] = counts.get(k, 0) + v
    log.info("broker setup applied", **counts)
    return counts


def setup_hub(topology: Topology, hub_id: str, m: Management, broker_ca: Path) -> dict[str, int]:
    """Hub ``hub_id``'s objects on its own broker, with that broker's admin account ``m``: its vhost,
    the accounts that work in it (the hub's own, its agencies', each neighbour's link, named as the
    neighbour's client certificate names it) with their permissions, its exchanges, queues and
    bindings, and its policy.  Touches no other broker: no operator needs an account on another's."""
    names = wire.names(topology)
    vhost = names.vhost(hub_id)
    check_broker_supports_at_least_once(m)
    m.put(f"/api/vhosts/{q(vhost)}", {"description": f"lienthong hub {hub_id}"})
    # the admin account needs rights in the vhost to declare its objects
    m.put(f"/api/permissions/{q(vhost)}/{q(m.user)}", {"configure": ".*", "write": ".*", "read": ".*"})
    counts = {"vhosts": 1, "users": 0, "permissions": 0, "declarations": 0, "policies": 0}
    for p in layout.permissions(topology):
        if p.vhost != vhost:
            continue
        grant(m, p)
        counts["users"] += 1
        counts["permissions"] += 1
    items = layout.declarations(topology, hub_id)
    blocking.declare(layout.admin_url(topology, hub_id, m.url, broker_ca), items)
    counts["declarations"] = len(items)
    policy = layout.reliability_policy()
    m.put(f"/api/policies/{q(vhost)}/{q(policy.name)}", {"pattern": policy.pattern, "definition": policy.definition,
                                                       "priority": policy.priority, "apply-to": "queues"})
    counts["policies"] = 1
    check_at_least_once(m, vhost, layout.dead_lettering_queues(topology))
    return counts


def sync_hub(old: Topology, new: Topology, hub_id: str, m: Management, declare_url: str) -> dict[str, int]:
    """Bring hub ``hub_id``'s broker from directory ``old`` to ``new`` while the hub serves: what the
    new one adds is declared (over ``declare_url``, the hub's own account) and its accounts may log
    in; the accounts that no longer work here lose their rights in this vhost, and are deleted
    when they have none left on this broker.  A removed agency's inbox queue is kept with what
    waits in it (``lienthong status`` lists it): no account reads it any more."""
    vhost = wire.names(new).vhost(hub_id)
    before = {p.user: p for p in layout.permissions(old) if p.vhost == vhost}
    after = {p.user: p for p in layout.permissions(new) if p.vhost == vhost}
    counts = {"users": 0, "declarations": 0, "withdrawn": 0}
    for user, p in after.items():
        if before.get(user) != p:
            grant(m, p)
            counts["users"] += 1
    items = layout.declarations(new, hub_id)
    blocking.declare(declare_url, items)
    counts["declarations"] = len(items)
    for user in sorted(set(before) - set(after)):
        m.request("DELETE", f"/api/permissions/{q(vhost)}/{q(user)}", missing_ok=True)
        if not m.get(f"/api/users/{q(user)}/permissions"):
            m.request("DELETE", f"/api/users/{q(user)}", missing_ok=True)
        counts["withdrawn"] += 1
    return counts


def grant(m: Management, p: layout.Permission) -> None:
    """The account of ``p`` (with no password: it logs in only with its client certificate, EXTERNAL
    over TLS) and its rights in ``p``'s vhost."""
    m.put(f"/api/users/{q(p.user)}", {"password_hash": "", "tags": ""})
    m.put(f"/api/permissions/{q(p.vhost)}/{q(p.user)}", {"configure": p.configure, "write": p.write, "read": p.read})


def check_broker_supports_at_least_once(m: Management) -> None:
    """At-least-once dead-lettering needs RabbitMQ 3.10 or later with the ``stream_queue`` feature
    flag enabled; without them the policy key is ignored and dead-lettering stays at-most-once."""
    version = str(m.get("/api/overview").get("rabbitmq_version", "0"))
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < (3, 10):
        raise ConfigError(N_("RabbitMQ {version} at {base} cannot dead-letter at-least-once: lienthong needs "
                             "RabbitMQ 3.10 or later"), version=version, base=m.base)
    flags = {f["name"]: f["state"] for f in m.get("/api/feature-flags") or []}
    if flags.get("stream_queue", "enabled") != "enabled":
        raise ConfigError(N_("RabbitMQ at {base} has the feature flag stream_queue {state}: at-least-once "
                             "dead-lettering needs it ('rabbitmqctl enable_feature_flag stream_queue')"), base=m.base,
                          state=flags['stream_queue'])


def check_at_least_once(m: Management, vhost: str, queues: list[str]) -> None:
    """Fail unless every queue that dead-letters is governed by at-least-once dead-lettering: a
    policy of higher priority (an operator's own) would silently replace lienthong's."""
    policies = m.get(f"/api/policies/{q(vhost)}") or []
    for queue in queues:
        effective = layout.effective_policy(policies, queue)
        definition = (effective or {}).get("definition", {})
        if any(definition.get(k) != v for k, v in layout.AT_LEAST_ONCE.items()):
            who = (f"policy {effective['name']!r} (priority {effective.get('priority', 0)})" if effective
                   else "no policy")
            raise ConfigError(
                N_("queue {queue!r} in vhost {vhost!r} is governed by {who}, not at-least-once dead-lettering: "
                   "messages it retries or parks could be lost in a broker restart. Add {settings} to that policy, "
                   "or give it a priority below {priority}"), queue=queue, vhost=vhost, who=who,
                settings=', '.join(f'{k}: {v}' for k, v in layout.AT_LEAST_ONCE.items()),
                priority=layout.reliability_policy().priority)
