"""What each hub did lately, read from its own audit log: documents and statuses it passed on and
those it refused, counted per time slot over the last hours, and its latest refusals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from broker.core.hoprecords import parse_record
from broker.core.outcome import Verdict
from broker.core.topology import Topology
from broker.relay.store import open_store
from broker.settings import Settings

HOURS = 6
SLOTS = 24
"""The charts' span and its slots (15 minutes each)."""


@dataclass
class Traffic:
    """One hub's hop verdicts per slot, oldest first (the last slot ends now)."""

    hub: str
    passed: list[int] = field(default_factory=lambda: [0] * SLOTS)
    refused: list[int] = field(default_factory=lambda: [0] * SLOTS)


@dataclass(frozen=True)
class Rejection:
    at: str
    hub: str
    code: str
    document_id: str
    reason: str


def read(settings: Settings, topology: Topology, *, now: float | None = None,
         limit: int = 20) -> tuple[dict[str, Traffic], list[Rejection]]:
    """Each hub's traffic over the last :data:`HOURS`, and the ``limit`` latest refusals of all hubs."""
    now = time.time() if now is None else now
    span = HOURS * 3600
    since = now - span
    out: dict[str, Traffic] = {}
    refusals: list[Rejection] = []
    for hub in topology.hubs:
        out[hub] = Traffic(hub)
        try:
            store = open_store(settings.state_url, hub=hub)
        except Exception:  # noqa: BLE001 - a hub without a store yet has nothing to show
            continue
        try:
            rows = store.audit_rows(hub=hub, since=since)
            latest = store.audit_rows(hub=hub, newest=500)
        finally:
            store.close()
        for row in rows:
            if row.kind != "hop":
                continue
            slot = min(SLOTS - 1, int((row.at - since) / span * SLOTS))
            rec = parse_record(row.body)
            (out[hub].refused if rec.verdict == Verdict.REJECTED else out[hub].passed)[slot] += 1
        for row in latest:
            if row.kind == "hop":
                rec = parse_record(row.body)
                if rec.verdict == Verdict.REJECTED:
                    refusals.append(Rejection(rec.at, hub, rec.code, rec.document_id, rec.extra.get("reason", "")))
    return out, sorted(refusals, key=lambda r: r.at, reverse=True)[:limit]
