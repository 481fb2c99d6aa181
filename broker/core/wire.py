"""The wire contract: every name lienthong puts on AMQP, in one place (docs/wire.md in prose).

Headers a hub reads and writes and the values of ``lt-kind``, who handed a message in, the
exchanges and queues of a hub's vhost, broker account names, and the message id.  Pure data and
small functions: the core decides with them, the relay declares and publishes with them, the
adapters speak them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.core.topology import Topology

# -- headers ---------------------------------------------------------------------------------------

H_KIND = "lt-kind"          # what the message is: a Kind below
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
H_RETRIES = "lt-retries"    # one id per series of retries of a delivery (its refusal when they run out is claimed once)

HUB_ONLY = (H_ORIGIN, H_CODE, H_REASON, H_HUB, H_REPLAY, H_ATTEMPT, H_RETRIES)
"""Headers only this hub writes, on what it puts into its own ingress (retry tiers, an operator's
replay) or parks.  Set by anyone else they would steer the hub, so they are dropped on entry."""


class Kind(StrEnum):
    """What a message is (``lt-kind``)."""

    EDXML = "edxml"
    """An edXML document or status message, signed by its agency (the default: no header)."""
    RECEIPT = "receipt"
    """A transport receipt signed by a hub, on its way to an agency."""
    BUNDLE = "receipts"
    """Between hubs: receipts for the agencies of one hub, travelling as one message."""
    CHECKPOINT = "checkpoint"
    """Between hubs: a neighbour's signed audit-log checkpoint, to be witnessed."""
    DIRECTORY = "directory"
    """Between hubs, or from the hub's operator: a signed directory, passed on along the tree."""
    DIRECTORY_VERSION = "directory-version"
    """Between hubs: the version of the directory in force at the sender (``{"version": n}``); a
    neighbour that has a newer one answers with it."""


def kind_of(headers: Mapping[str, Any]) -> str:
    """The ``lt-kind`` of a message (edXML when it names none)."""
    return str(headers.get(H_KIND) or Kind.EDXML)

# -- exchanges and queues of a hub's vhost ---------------------------------------------------------

EX_INGRESS, EX_INBOX, EX_RETRY, EX_PARKING, EX_UNROUTABLE = "ingress", "inbox", "retry", "parking", "unroutable"
EX_OUTBOUND = "outbound"
"""Where a hub puts what it could not hand to a neighbour whose broker is away (routing key: the
neighbour), to forward it once the link is back (:mod:`broker.relay.outbound`)."""
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


def outbound_queue(hub_id: str) -> str:
    """What waits at a hub for neighbour ``hub_id``'s broker to come back."""
    return f"out.{hub_id}"


def handed_in_by(exchange: str, headers: Mapping[str, Any]) -> str:
    """``agency:<code>``, ``link:<hub>`` or ``''``: whose account handed a message to this hub.  What
    came through an entry exchange names its account (:func:`origin_of`); what came back through the
    hub's own ingress (a retry tier, an operator's replay) carries its first entry in ``lt-origin``.
    The one place this is worked out (``headers``: the trusted ones, :func:`trusted_headers`)."""
    if exchange == EX_INGRESS:
        return str(headers.get(H_ORIGIN) or "")
    return origin_of(exchange)


def agency_of(origin: str) -> str:
    """The agency code of an ``agency:<code>`` origin, else ``''``."""
    return origin[len("agency:"):] if origin.startswith("agency:") else ""


def hub_of(origin: str) -> str:
    """The hub id of a ``link:<hub>`` origin, else ``''``."""
    return origin[len("link:"):] if origin.startswith("link:") else ""


def without_broker_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` without the ``x-`` ones the broker adds (delivery counts, dead-letter history):
    what a hub keeps when it moves a message on."""
    return {k: v for k, v in headers.items() if not k.startswith("x-")}


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
