"""The wire contract: every name lienthong puts on AMQP, in one place (docs/wire.md in prose).

Headers a hub reads and writes, the exchanges and queues of a hub's vhost, broker account names,
and the message id.  Pure data and small functions: the core decides with them, the relay
declares and publishes with them, the adapters speak them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.core.topology import Topology

# -- headers ---------------------------------------------------------------------------------------

H_KIND = "lt-kind"          # "edxml" (default), "receipt"; between hubs also "receipts" (a bundle), "checkpoint"
H_TRACE = "lt-trace"        # list of signed hop record tokens
H_RECIPIENTS = "lt-recipients"  # the recipients this copy serves (informative; the signed record rules)
H_ORIGIN = "lt-origin"      # "agency:<code>" / "link:<hub>": original entry, kept across our retry tier
H_CODE = "lt-code"
H_REASON = "lt-reason"
H_HUB = "lt-hub"
H_TO = "lt-to"              # receipts: the agency to notify
H_ISSUED = "lt-issued"      # receipts: the issuing hub's signed record of it (its digest, the agency it is for)
H_REPLAY = "lt-replay"      # set by `lienthong dlq replay`: an operator re-submits a parked message
H_ATTEMPT = "lt-attempt"    # retry tier count, set by the hub when it sends a message to a retry queue

HUB_ONLY = (H_ORIGIN, H_CODE, H_REASON, H_HUB, H_REPLAY, H_ATTEMPT)
"""Headers only this hub writes, on what it puts into its own ingress (retry tiers, an operator's
replay) or parks.  Set by anyone else they would steer the hub, so they are dropped on entry."""

# -- exchanges and queues of a hub's vhost ---------------------------------------------------------

EX_INGRESS, EX_INBOX, EX_RETRY, EX_PARKING, EX_UNROUTABLE = "ingress", "inbox", "retry", "parking", "unroutable"
Q_INGRESS, Q_PARKING, Q_UNROUTABLE = "ingress", "parking", "unroutable"


def agency_exchange(organ_id: str) -> str:
    """Where an agency publishes: its own entry exchange on its hub."""
    return f"in.{organ_id}"


def link_exchange(hub_id: str) -> str:
    """Where hub ``hub_id`` publishes on each neighbouring hub."""
    return f"in.link.{hub_id}"


def origin_of(exchange: str) -> str:
    """``agency:<code>`` / ``link:<hub>`` for an entry exchange, ``''`` for anything else."""
    if exchange.startswith("in.link."):
        return "link:" + exchange[len("in.link."):]
    if exchange.startswith("in."):
        return "agency:" + exchange[len("in."):]
    return ""


def inbox_queue(organ_id: str) -> str:
    return f"inbox.{organ_id}"


def retry_queue(tier: str) -> str:
    return f"retry.{tier}"


def trusted_headers(exchange: str, headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of an inbound message that the hub may act on.  Only the hub writes to its own
    ingress exchange, so what arrives there keeps everything; what an agency or a neighbour hands
    in loses the hub-only headers (a forged ``lt-replay`` would have a refusal judged again, a
    forged ``lt-attempt`` would send a message straight to parking)."""
    plain = dict(headers or {})
    if exchange == EX_INGRESS:
        return plain
    return {k: v for k, v in plain.items() if k not in HUB_ONLY}


# -- accounts --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Names:
    """Broker names of a deployment: vhosts and user accounts, from the topology's namespace."""

    namespace: str = "lienthong"

    @property
    def _prefix(self) -> str:
        return "" if self.namespace == "lienthong" else f"{self.namespace}."

    def vhost(self, hub_id: str) -> str:
        return f"{self.namespace}.{hub_id}"

    def hub_user(self, hub_id: str) -> str:
        return f"{self._prefix}hub.{hub_id}"

    def link_user(self, hub_id: str) -> str:
        return f"{self._prefix}link.{hub_id}"

    def agency_user(self, organ_id: str) -> str:
        return f"{self._prefix}{organ_id}"


def names(topology: Topology) -> Names:
    return Names(topology.namespace)


# -- identity --------------------------------------------------------------------------------------

def message_id(data: bytes) -> str:
    """A message's id on the wire and in every store: the SHA-256 of its exact bytes, in hex."""
    return hashlib.sha256(data).hexdigest()
