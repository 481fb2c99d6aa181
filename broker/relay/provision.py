"""``lienthong broker setup``: apply the layout of the topology to RabbitMQ, idempotently.

Everything goes through the management HTTP API (as the admin account the management URL names),
as definitions imported in a few requests per broker and one per vhost
(:mod:`broker.relay.definitions`); a request that times out or meets a broker error (HTTP 5xx)
is tried again after a pause, a few times, before the set-up stops with TRANSIENT.  Hub, link and agency
accounts have no password: they log in only with their client certificate over TLS (RabbitMQ's
EXTERNAL mechanism, the user named by the certificate's common name), so none can log in over
plain AMQP and no shared secret crosses the wire or sits in a common file.  Running setup twice
changes nothing.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from broker.core import wire
from broker.core.errors import ConfigError, TransientError
from broker.core.topology import Topology
from broker.i18n import N_
from broker.logs import get_logger
from broker.relay import definitions, layout
from broker.relay.amqp import blocking

log = get_logger(__name__)
PAUSES = (1.0, 2.0, 4.0, 8.0)
"""Pauses before each new attempt of a management request that timed out or met a broker error."""
BUSY = {500, 502, 503, 504}
"""HTTP statuses of a busy or failing broker (worth another attempt); the others are answers."""


class Management:
    """A minimal client of the RabbitMQ management API."""

    def __init__(self, url: str, *, pauses: tuple[float, ...] | None = None) -> None:
        """``pauses``: before each new attempt of a request (default :data:`PAUSES`; fewer for a
        look that must not wait, such as ``lienthong status`` reading a broker that may be away)."""
        parts = urlsplit(url)
        self.url, self.pauses = url, PAUSES if pauses is None else pauses
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        if not parts.username:
            raise ConfigError(N_("the management URL {base} names no admin account (http://USER:PASSWORD@host:15672; "
                                 "scripts/ensure-rabbitmq.sh makes one)"), base=self.base)
        user, password = unquote(parts.username), unquote(parts.password or "")
        self.user = user
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 15.0,
                missing_ok: bool = False) -> Any:
        """One call; tried again after each of the pauses while it times out, the connection is
        refused or breaks, or the broker answers 5xx (a broker starting or restarting answers
        within them).  ``missing_ok``: a 404 (deleting what is gone already) is no error.  Another
        HTTP error is :class:`ConfigError`; no answer after the last attempt, :class:`TransientError`."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": self._auth, "Content-Type": "application/json"})
        started = time.monotonic()
        for attempt, pause in enumerate((*self.pauses, None), start=1):
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.read()[:200]!r}"
                if exc.code == 404 and (missing_ok or (method == "DELETE" and attempt > 1)):
                    return None  # gone already, or the attempt that timed out did it (a vhost takes a minute)
                if exc.code not in BUSY:
                    raise ConfigError(N_("management API {method} {path}: {reason}"), method=method, path=path,
                                      reason=reason) from None
            except (OSError, http.client.HTTPException) as exc:  # a timeout, a broken connection
                reason = str(exc) or type(exc).__name__
            if pause is None:
                raise TransientError(
                    N_("management API at {base} did not complete {method} {path} in {attempts} attempts over "
                       "{seconds} s ({reason}): the broker is overloaded or short of file handles ('lienthong "
                       "status' shows them); try again once it is not"), base=self.base, method=method, path=path,
                    attempts=attempt, seconds=f"{time.monotonic() - started:.0f}", reason=reason) from None
            log.warning("management API call failed; trying again", method=method, path=path, reason=reason,
                        attempt=attempt, in_seconds=pause)
            time.sleep(pause)
        raise AssertionError("unreachable")

    def put(self, path: str, body: Any) -> None:
        self.request("PUT", path, body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def delete_users(self, users: list[str], *, timeout: float = 120.0) -> int:
        """Delete those of ``users`` that exist, 500 to a call; the number deleted.  (The broker
        refuses a whole bulk delete naming one user it does not have, so an attempt that timed out
        after doing its work must not be sent again as it was.)"""
        deleted = 0
        for start in range(0, len(users), 500):
            have = {u["name"] for u in self.get("/api/users?columns=name")}
            batch = [u for u in users[start:start + 500] if u in have]
            try:
                if batch:
                    self.request("POST", "/api/users/bulk-delete", {"users": batch}, timeout=timeout)
            except ConfigError:
                have = {u["name"] for u in self.get("/api/users?columns=name")}
                if have & set(batch):
                    raise
            deleted += len(batch)
        return deleted


def for_hub(hub_url: str, default_url: str, *, pauses: tuple[float, ...] | None = None) -> Management:
    """The management API of a hub's broker: its own URL (topology ``management_url``) if it has
    one, with the admin account of ``default_url`` (the deployment's, kept out of the topology)
    unless that URL names its own."""
    if not hub_url:
        return Management(default_url, pauses=pauses)
    hub, admin = urlsplit(hub_url), urlsplit(default_url)
    if hub.username or not admin.username:
        return Management(hub_url, pauses=pauses)
    return Management(hub._replace(netloc=f"{admin.netloc.rpartition('@')[0]}@{hub.netloc}").geturl(), pauses=pauses)


def q(name: str) -> str:
    return quote(name, safe="")


def apply(topology: Topology, default_mgmt_url: str) -> dict[str, int]:
    """Every hub's objects, each on its own broker (``management_url`` of the hub, else
    ``default_mgmt_url``): the development default, where one admin reaches every broker.  An
    operator of one hub uses :func:`setup_hub` alone.  Returns counts of what was applied."""
    mgmts: dict[str, Management] = {}
    on: dict[str, list[str]] = {}
    for hub_id in topology.hubs:
        url = topology.hubs[hub_id].management_url or default_mgmt_url
        mgmts.setdefault(url, for_hub(url, default_mgmt_url))
        on.setdefault(url, []).append(hub_id)
    counts = dict.fromkeys(("vhosts", "users", "permissions", "declarations", "policies"), 0)
    for url, hubs in on.items():
        for k, v in setup_hubs(topology, hubs, mgmts[url]).items():
            counts[k] += v
    log.info("broker setup applied", **counts)
    return counts


def setup_hub(topology: Topology, hub_id: str, m: Management) -> dict[str, int]:
    """Hub ``hub_id``'s objects on its own broker, with that broker's admin account ``m``: its vhost,
    the accounts that work in it (the hub's own, its agencies', each neighbour's link, named as the
    neighbour's client certificate names it) with their permissions, its exchanges, queues and
    bindings, and its policy.  Touches no other broker: no operator needs an account on another's."""
    return setup_hubs(topology, [hub_id], m)


def setup_hubs(topology: Topology, hubs: list[str], m: Management) -> dict[str, int]:
    """The objects of ``hubs``, all on the broker of admin account ``m``: the accounts in a few
    imports for all of them (:mod:`broker.relay.definitions`), then each vhost's layout in one."""
    names = wire.names(topology)
    vhosts = {names.vhost(h): h for h in hubs}
    check_broker_supports_at_least_once(m)
    theirs = [p for p in layout.permissions(topology) if p.vhost in vhosts]
    users = list(dict.fromkeys(p.user for p in theirs))
    # the admin account needs rights in each vhost to read and manage it
    own = [layout.Permission(v, m.user, ".*", ".*", ".*") for v in vhosts]
    definitions.import_accounts(m, [(v, f"lienthong hub {h}") for v, h in vhosts.items()], users, own + theirs)
    counts = {"vhosts": len(vhosts), "users": len(users), "permissions": len(theirs), "declarations": 0,
              "policies": 0}
    policy = layout.reliability_policy()
    for vhost, hub_id in vhosts.items():
        items = layout.declarations(topology, hub_id)
        definitions.import_vhost(m, vhost, items, policy)
        counts["declarations"] += len(items)
        counts["policies"] += 1
        check_at_least_once(m, vhost, layout.dead_lettering_queues(topology))
    return counts


def sync_hub(old: Topology, new: Topology, hub_id: str, m: Management, declare_url: str) -> dict[str, int]:
    """Bring hub ``hub_id``'s broker from directory ``old`` to ``new`` while the hub serves: what the
    new one adds is declared (over ``declare_url``, the hub's own account) and its accounts may log
    in; the accounts that no longer work here lose their rights in this vhost, and are deleted
    when they have none left on this broker.  A removed agency's inbox queue is kept with what
    waits in it (``lienthong status`` lists it): no account reads it any more.  Only the objects
    the new version adds are declared (``broker setup`` puts back any other that went missing):
    a hub whose part of the directory did not change asks nothing of its broker."""
    vhost = wire.names(new).vhost(hub_id)
    before = {p.user: p for p in layout.permissions(old) if p.vhost == vhost}
    after = {p.user: p for p in layout.permissions(new) if p.vhost == vhost}
    counts = {"users": 0, "declarations": 0, "withdrawn": 0}
    for user, p in after.items():
        if before.get(user) != p:
            grant(m, p)
            counts["users"] += 1
    had = {repr(item) for item in layout.declarations(old, hub_id)}
    items = [item for item in layout.declarations(new, hub_id) if repr(item) not in had]
    if items:
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
