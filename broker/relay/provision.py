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
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from broker.core import wire
from broker.core.errors import ConfigError, TransientError
from broker.core.topology import Topology
from broker.logs import get_logger
from broker.relay import definitions, layout

log = get_logger(__name__)
PAUSES = (1.0, 2.0, 4.0, 8.0)
"""Pauses before each new attempt of a management request that timed out or met a broker error."""
BUSY = {500, 502, 503, 504}
"""HTTP statuses of a busy or failing broker (worth another attempt); the others are answers."""


class Management:
    """A minimal client of the RabbitMQ management API."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        if not parts.username:
            raise ConfigError(f"the management URL {self.base} names no admin account "
                              f"(http://USER:PASSWORD@host:15672; scripts/ensure-rabbitmq.sh makes one)")
        user, password = unquote(parts.username), unquote(parts.password or "")
        self.user = user
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 15.0) -> Any:
        """One call; tried again after each of :data:`PAUSES` while it times out, the connection
        breaks or the broker answers 5xx.  Another HTTP error is :class:`ConfigError`; nothing
        listening, or no answer after the last attempt, :class:`TransientError`."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": self._auth, "Content-Type": "application/json"})
        started = time.monotonic()
        for attempt, pause in enumerate((*PAUSES, None), start=1):
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.read()[:200]!r}"
                if method == "DELETE" and exc.code == 404 and attempt > 1:
                    return None  # the attempt that timed out did it (a vhost of many queues takes a minute)
                if exc.code not in BUSY:
                    raise ConfigError(f"management API {method} {path}: {reason}") from None
            except ConnectionRefusedError as exc:
                raise TransientError(f"management API at {self.base} unreachable: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:  # a timeout, a broken connection
                reason = str(exc) or type(exc).__name__
            if pause is None:
                raise TransientError(
                    f"management API at {self.base} did not complete {method} {path} in {attempt} attempts over "
                    f"{time.monotonic() - started:.0f} s ({reason}): the broker is overloaded or short of file "
                    f"handles ('lienthong status' shows them); try again once it is not") from None
            log.warning("management API call failed; trying again", method=method, path=path, reason=reason,
                        attempt=attempt, in_seconds=pause)
            time.sleep(pause)
        raise AssertionError("unreachable")

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
    """Declare everything; return counts of what was applied.  ``broker_ca``: the CA of the
    brokers' TLS certificates."""
    counts = {"vhosts": 0, "users": 0, "permissions": 0, "declarations": 0, "policies": 0}
    mgmts: dict[str, Management] = {}

    def mgmt_for(hub_id: str) -> Management:
        url = topology.hubs[hub_id].management_url or default_mgmt_url
        return mgmts.setdefault(url, for_hub(url, default_mgmt_url))

    names = wire.names(topology)
    # per broker: its vhosts, and the users of those (users exist per broker: each is created on
    # every broker that holds one of its vhosts), with their permissions
    perms = layout.permissions(topology)
    vhost_hub = {names.vhost(h): h for h in topology.hubs}
    brokers = {mgmt_for(h).base: mgmt_for(h) for h in topology.hubs}
    for base, m in brokers.items():
        hubs = [h for h in topology.hubs if mgmt_for(h).base == base]
        theirs = [p for p in perms if mgmt_for(vhost_hub[p.vhost]).base == base]
        users = list(dict.fromkeys(p.user for p in theirs))
        # the admin account needs rights in each vhost to read and manage it
        own = [layout.Permission(names.vhost(h), m.user, ".*", ".*", ".*") for h in hubs]
        definitions.import_accounts(m, [(names.vhost(h), f"lienthong hub {h}") for h in hubs], users, own + theirs)
        counts["vhosts"] += len(hubs)
        counts["users"] += len(users)
        counts["permissions"] += len(theirs)
    policy = layout.reliability_policy()
    for m in brokers.values():
        check_broker_supports_at_least_once(m)
    for hub_id in topology.hubs:
        items = layout.declarations(topology, hub_id)
        vhost = names.vhost(hub_id)
        definitions.import_vhost(mgmt_for(hub_id), vhost, items, policy)
        counts["declarations"] += len(items)
        counts["policies"] += 1
        check_at_least_once(mgmt_for(hub_id), vhost, layout.dead_lettering_queues(topology))
    log.info("broker setup applied", **counts)
    return counts


def check_broker_supports_at_least_once(m: Management) -> None:
    """At-least-once dead-lettering needs RabbitMQ 3.10 or later with the ``stream_queue`` feature
    flag enabled; without them the policy key is ignored and dead-lettering stays at-most-once."""
    version = str(m.get("/api/overview").get("rabbitmq_version", "0"))
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < (3, 10):
        raise ConfigError(f"RabbitMQ {version} at {m.base} cannot dead-letter at-least-once: "
                          f"lienthong needs RabbitMQ 3.10 or later")
    flags = {f["name"]: f["state"] for f in m.get("/api/feature-flags") or []}
    if flags.get("stream_queue", "enabled") != "enabled":
        raise ConfigError(f"RabbitMQ at {m.base} has the feature flag stream_queue {flags['stream_queue']}: "
                          f"at-least-once dead-lettering needs it ('rabbitmqctl enable_feature_flag stream_queue')")


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
                f"queue {queue!r} in vhost {vhost!r} is governed by {who}, not at-least-once dead-lettering: "
                f"messages it retries or parks could be lost in a broker restart. Add "
                f"{', '.join(f'{k}: {v}' for k, v in layout.AT_LEAST_ONCE.items())} to that policy, "
                f"or give it a priority below {layout.reliability_policy().priority}")
