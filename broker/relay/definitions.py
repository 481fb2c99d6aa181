"""The broker layout as RabbitMQ definitions, imported through the management API in a few requests.

Declared one call at a time, the nation's layout (35 vhosts, about 4,200 users and permissions,
4,200 quorum queues and three times as many exchanges and bindings) was some 25,000 calls, each a
new HTTP request or an AMQP round trip, and a broker short of file handles timed them out.  Here
each broker is read first (its vhosts, users and permissions: three requests), and what it lacks
or holds otherwise is imported in requests of at most :data:`CHUNK` entries (``POST
/api/definitions``); then each vhost is read (its exchanges, queues, bindings and policies) and
what it lacks goes in one import (``POST /api/definitions/{vhost}``), read again to check.  Run
again on a broker that holds everything, set-up only reads.  An import leaves an object that
already exists as it is, where a declaration would have refused one with other arguments:
:func:`check_declared` refuses those with a sentence, as RabbitMQ never changes a queue's arguments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from broker.core.errors import ConfigError
from broker.i18n import N_
from broker.relay.layout import Binding, Exchange, Permission, Policy, Queue

CHUNK = 1000
"""Most accounts (users, permissions) in one import: each request stays short (a few seconds on a
busy broker), so a timeout costs one chunk, not the whole set-up."""
IMPORT_TIMEOUT = 120.0
"""Seconds one import may take (a vhost's 150 quorum queues took 5 s on an idle 2-core machine)."""


class Api(Protocol):
    """What this module needs of :class:`broker.relay.provision.Management`."""

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = ...) -> Any: ...


def q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _chunks(m: Api, key: str, entries: list[dict[str, Any]]) -> None:
    for start in range(0, len(entries), CHUNK):
        m.request("POST", "/api/definitions", {key: entries[start:start + CHUNK]}, timeout=IMPORT_TIMEOUT)


def import_accounts(m: Api, vhosts: Sequence[tuple[str, str]], users: Sequence[str],
                    permissions: Sequence[Permission]) -> int:
    """Create the ``vhosts`` ((name, description)), ``users`` and ``permissions`` that the broker
    lacks or holds otherwise; returns how many entries were imported.  Users have no password
    (they log in with their client certificate) and no tags: a password or a tag given them since
    is taken away.  Never pass the admin account as a user: this would take its password."""
    have_vhosts = {v["name"] for v in m.request("GET", "/api/vhosts?columns=name") or []}
    new_vhosts = [{"name": n, "description": d} for n, d in vhosts if n not in have_vhosts]
    have_users = {u["name"]: u for u in m.request("GET", "/api/users?columns=name,password_hash,tags") or []}
    new_users = [{"name": u, "password_hash": "", "tags": ""} for u in users
                 if u not in have_users or have_users[u].get("password_hash") or have_users[u].get("tags")]
    have_perms = {(p["vhost"], p["user"]): (p["configure"], p["write"], p["read"])
                  for p in m.request("GET", "/api/permissions") or []}
    new_perms = [{"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}
                 for p in permissions if have_perms.get((p.vhost, p.user)) != (p.configure, p.write, p.read)]
    _chunks(m, "vhosts", new_vhosts)
    _chunks(m, "users", new_users)
    _chunks(m, "permissions", new_perms)
    return len(new_vhosts) + len(new_users) + len(new_perms)


def vhost_definitions(items: Sequence[Exchange | Queue | Binding], policy: Policy) -> dict[str, Any]:
    """One vhost's exchanges, queues, bindings and policy, as ``POST /api/definitions/{vhost}`` takes them."""
    return {
        "policies": [{"name": policy.name, "pattern": policy.pattern, "apply-to": "queues",
                      "definition": policy.definition, "priority": policy.priority}],
        "exchanges": [{"name": i.name, "type": i.type, "durable": True, "auto_delete": False, "internal": False,
                       "arguments": i.arguments} for i in items if isinstance(i, Exchange)],
        "queues": [{"name": i.name, "durable": True, "auto_delete": False, "arguments": i.arguments}
                   for i in items if isinstance(i, Queue)],
        "bindings": [{"source": i.exchange, "destination": i.queue, "destination_type": "queue",
                      "routing_key": key(i), "arguments": {}} for i in items if isinstance(i, Binding)],
    }


def key(binding: Binding) -> str:
    """The binding's routing key as RabbitMQ keeps it: a queue bound with no key is bound with its name."""
    return binding.routing_key or binding.queue


def import_vhost(m: Api, vhost: str, items: Sequence[Exchange | Queue | Binding], policy: Policy) -> bool:
    """Declare what one vhost lacks of its layout and of the reliability policy, in one import;
    returns whether anything was imported.  Raises :class:`ConfigError` if an object exists with
    other arguments, or is still missing after the import."""
    ours = [p for p in m.request("GET", f"/api/policies/{q(vhost)}") or [] if p.get("name") == policy.name]
    if not check_declared(vhost, items, *_holds(m, vhost)) and ours and (
            ours[0].get("pattern"), ours[0].get("definition"), ours[0].get("priority"), ours[0].get("apply-to")
    ) == (policy.pattern, policy.definition, policy.priority, "queues"):
        return False
    m.request("POST", f"/api/definitions/{q(vhost)}", vhost_definitions(items, policy), timeout=IMPORT_TIMEOUT)
    missing = check_declared(vhost, items, *_holds(m, vhost))
    if missing:
        raise ConfigError(N_("{count} exchange(s), queue(s) or binding(s) are still missing from vhost {vhost!r} "
                             "after broker setup imported them, {first} first: see the broker's log"),
                          count=len(missing), vhost=vhost, first=missing[0])
    return True


def _holds(m: Api, vhost: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The vhost's exchanges, queues and bindings, as the management API lists them."""
    return (m.request("GET", f"/api/exchanges/{q(vhost)}?columns=name,type,arguments") or [],
            m.request("GET", f"/api/queues/{q(vhost)}?columns=name,arguments") or [],
            m.request("GET", f"/api/bindings/{q(vhost)}?columns=source,destination,destination_type,routing_key")
            or [])


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a or {}, sort_keys=True) == json.dumps(b or {}, sort_keys=True)


def check_declared(vhost: str, items: Sequence[Exchange | Queue | Binding], exchanges: list[dict[str, Any]],
                   queues: list[dict[str, Any]], bindings: list[dict[str, Any]]) -> list[str]:
    """What of ``items`` the vhost (as the management API lists it) lacks, named; raises
    :class:`ConfigError` if it holds one with another type or other arguments."""
    missing: list[str] = []
    have_x = {x["name"]: x for x in exchanges}
    have_q = {x["name"]: x for x in queues}
    have_b = {(b["source"], b["destination"], b.get("routing_key", "")) for b in bindings
              if b.get("destination_type", "queue") == "queue"}
    for item in items:
        if isinstance(item, Exchange):
            got = have_x.get(item.name)
            if got is None:
                missing.append(f"exchange {item.name!r}")
            elif got.get("type") != item.type or not _same(got.get("arguments"), item.arguments):
                raise ConfigError(
                    N_("exchange {exchange!r} in vhost {vhost!r} exists as {type} with arguments {arguments}, not "
                       "{wanted_type} with {wanted}: RabbitMQ does not change an exchange; delete it, then run "
                       "broker setup again"), exchange=item.name, vhost=vhost, type=got.get("type"),
                    arguments=json.dumps(got.get("arguments") or {}), wanted_type=item.type,
                    wanted=json.dumps(item.arguments))
        elif isinstance(item, Queue):
            got = have_q.get(item.name)
            if got is None:
                missing.append(f"queue {item.name!r}")
            elif not _same(got.get("arguments"), item.arguments):
                raise ConfigError(
                    N_("queue {queue!r} in vhost {vhost!r} exists with arguments {arguments}, not {wanted}: RabbitMQ "
                       "never changes a queue's arguments; move its messages elsewhere and delete it, then run "
                       "broker setup again"), queue=item.name, vhost=vhost,
                    arguments=json.dumps(got.get("arguments") or {}, sort_keys=True),
                    wanted=json.dumps(item.arguments, sort_keys=True))
        elif (item.exchange, item.queue, key(item)) not in have_b:
            missing.append(f"the binding of {item.queue!r} to {item.exchange!r} (key {key(item)!r})")
    return missing
