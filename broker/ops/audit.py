"""The audit log and document trails: what auditors check, offline.

Each hub appends every hop record and receipt to its log (``broker.relay.store``).
Entry ``n`` stores ``hash = SHA-256(prev || canonical JSON of the entry)``,
``prev`` being entry ``n-1``'s hash: changing, removing or reordering any
entry breaks every hash after it.  Periodically the hub signs a checkpoint
``(hub, seq, hash, at)``, hands it to its neighbours, which witness it in their
own logs, and has it time-stamped; :func:`verify_log` checks all of it.  A
document's trail (:func:`collect`) is what every hub logged about it; evidence
bundles are :mod:`broker.ops.bundle`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from broker.core import receipts
from broker.core.auditlog import AuditRow, entry_hash
from broker.core.errors import AuditFailure, TraceInvalid
from broker.core.hoprecords import HopRecord, parse_record, verify_record
from broker.core.trust import TrustStore
from broker.relay import timestamp
from broker.relay.store import SqlStore

# --- the log ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogPolicy:
    """What ``verify-log`` requires of a log beyond an intact chain and checkpoints."""

    witness_within: float = 900.0
    """Seconds within which every entry must come under a checkpoint a neighbour witnessed (its
    own or a later one: the chain commits to every entry before it).  An operator can rewrite,
    and re-sign checkpoints over, only what no neighbour witnessed: this bounds that tail."""
    stamps_expected: bool = False
    """The deployment time-stamps its checkpoints (``settings.audit.tsa_url``)."""


@dataclass
class LogReport:
    hub: str
    entries: int
    checkpoints: int
    broken_at: int | None = None
    reason: str = ""
    witnessed: int = 0
    """Checkpoints of this hub its neighbours witnessed (and that match)."""
    time_stamped: int = 0
    """Checkpoints whose time-stamp verified against the authority given."""
    stamped: list[tuple[int, datetime]] = field(default_factory=list)
    """(entry, time the authority vouches for) of each verified stamp."""
    unwitnessed: int = 0
    """Entries after the last checkpoint a neighbour witnessed (the tail)."""
    unwitnessed_since: float | None = None
    """When the first of them was written."""
    not_checked: list[str] = field(default_factory=list)
    """What could not be checked here, and why: never a pass."""

    @property
    def ok(self) -> bool:
        return self.broken_at is None and not self.not_checked

    def _break(self, seq: int, reason: str) -> LogReport:
        self.broken_at, self.reason = seq, reason
        return self


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def verify_log(rows: Sequence[AuditRow], checkpoints: Sequence[tuple[int, str, float, str]],
               hub: str, hub_certs: Mapping[str, x509.Certificate],
               witnesses: Sequence[AuditRow] = (), timestamps: Mapping[int, bytes] | None = None,
               tsa_ca: Path | None = None, *, neighbours: Sequence[str] = (), absent: Sequence[str] = (),
               now: float | None = None, policy: LogPolicy = LogPolicy()) -> LogReport:
    """Recompute the chain, check the hub's own signed checkpoints, their time-stamps (against
    ``tsa_ca``) and what its ``neighbours`` witnessed (``witnesses``: audit entries of kind
    ``witness`` from the logs that are here; ``absent``: the neighbours whose logs are not).

    The hub's own checkpoints cannot show a log cut together with them, or rewritten and
    re-signed by its operator; a neighbour's witness can, for what it witnessed.  So every entry
    older than ``policy.witness_within`` must come under a witnessed checkpoint: a tail older
    than that (rewritten, or a hub whose checkpoints stopped) is a fault.  What cannot be checked
    here (no neighbour's log, stamps without ``tsa_ca``) is reported in ``not_checked``."""
    report = LogReport(hub, len(rows), len(checkpoints))
    by_seq = {row.seq: row for row in rows}
    fault = _chain_fault(rows) or _checkpoint_fault(checkpoints, by_seq, hub, hub_certs[hub])
    if fault is not None:
        return report._break(*fault)
    stamp_fault = _check_stamps(report, checkpoints, timestamps or {}, tsa_ca, policy, now or time.time())
    if stamp_fault is not None:
        return report._break(*stamp_fault)
    witnessed: set[int] = set()
    for row in witnesses:
        try:
            seen = json.loads(row.body)
            counter = verify_record(seen["witness"], hub_certs[row.hub])  # the witness's own signature
            if counter.extra.get("of") != hub:
                continue
            rec = verify_record(seen["checkpoint"], hub_certs[hub])
            seq = int(rec.extra["seq"])
        except (ValueError, KeyError, TypeError, TraceInvalid):
            continue  # not a witness of this hub's checkpoint: the witness's own log answers for it
        report.witnessed += 1
        mine = by_seq.get(seq)
        if mine is None:
            return report._break(seq, f"the log was cut: hub {row.hub} witnessed entry {seq} "
                                      f"(checkpoint of {rec.at}), which is gone")
        if mine.hash != rec.digest:
            return report._break(seq, f"the log was rewritten: hub {row.hub} witnessed entry {seq} with another hash")
        witnessed.add(seq)
    tail = [r for r in rows if r.seq > max(witnessed, default=0)]
    report.unwitnessed, report.unwitnessed_since = len(tail), (tail[0].at if tail else None)
    due = (now or time.time()) - policy.witness_within
    if not rows:
        return report
    if not neighbours:
        report.not_checked.append("no neighbour witnesses this hub's checkpoints")
    elif len(absent) == len(neighbours):
        report.not_checked.append(f"witnesses not checked: the logs of its neighbours ({', '.join(absent)}) are "
                                  f"not here")
    elif tail and tail[0].at < due:
        why = (f"its last {len(tail)} entries (from entry {tail[0].seq}, {_when(tail[0].at)}) are under no checkpoint "
               f"a neighbour witnessed: rewritten since, or its checkpoints stopped reaching its neighbours")
        if absent:  # the witness may be in a log that is not here
            report.not_checked.append(f"{why} (not here: the logs of {', '.join(absent)})")
        else:
            return report._break(tail[0].seq, why)
    return report


def _chain_fault(rows: Sequence[AuditRow]) -> tuple[int, str] | None:
    prev, expected_seq = "", 1
    for row in rows:
        if row.seq != expected_seq:
            return expected_seq, f"entry {expected_seq} is missing"
        if row.prev != prev:
            return row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}"
        if entry_hash(row) != row.hash:
            return row.seq, f"entry {row.seq} was altered (hash mismatch)"
        prev, expected_seq = row.hash, expected_seq + 1
    return None


def _checkpoint_fault(checkpoints: Sequence[tuple[int, str, float, str]], by_seq: Mapping[int, AuditRow], hub: str,
                      hub_cert: x509.Certificate) -> tuple[int, str] | None:
    for seq, hash_, _at, token in checkpoints:
        try:
            rec = verify_record(token, hub_cert)
        except TraceInvalid:
            return seq, f"checkpoint at entry {seq} is not signed by hub {hub}"
        if rec.digest != hash_ or rec.extra.get("seq") != str(seq):
            return seq, f"checkpoint at entry {seq} was altered"
        head = by_seq.get(seq)
        if head is None:
            return seq, f"the log was cut: checkpoint names entry {seq}, which is gone"
        if head.hash != hash_:
            return seq, f"the log was rewritten before checkpoint {seq}"
    return None


def _check_stamps(report: LogReport, checkpoints: Sequence[tuple[int, str, float, str]], stamps: Mapping[int, bytes],
                  tsa_ca: Path | None, policy: LogPolicy, now: float) -> tuple[int, str] | None:
    """Each stamp against the authority's CA: the checkpoint's imprint, the request's nonce, the
    chain; the time it vouches for, which cannot be before the hub signed the checkpoint."""
    signed = {seq: (at, token) for seq, _h, at, token in checkpoints}
    if stamps and tsa_ca is None:
        report.not_checked.append(f"{len(stamps)} time-stamps not checked (give --tsa-ca)")
        return None
    for seq, tsr in sorted(stamps.items()):
        if seq not in signed:
            return seq, f"the time-stamp of checkpoint {seq} does not verify: its checkpoint is gone"
        assert tsa_ca is not None
        try:
            when = timestamp.verify(signed[seq][1].encode(), tsr, tsa_ca)
        except AuditFailure as exc:
            return seq, f"the time-stamp of checkpoint {seq} does not verify: {exc.message}"
        if when.timestamp() < signed[seq][0] - 60:
            return seq, f"the time-stamp of checkpoint {seq} ({when:%Y-%m-%d %H:%M:%S} UTC) is before the checkpoint"
        report.time_stamped += 1
        report.stamped.append((seq, when))
    unstamped = [seq for seq, (at, _t) in signed.items() if seq not in stamps and at < now - policy.witness_within]
    if policy.stamps_expected and unstamped:
        report.not_checked.append(f"{len(unstamped)} checkpoints have no time-stamp (from entry {min(unstamped)}; "
                                  f"see the time-stamp-failed alerts)")
    return None


# --- trails -------------------------------------------------------------------------------------


@dataclass
class Trail:
    """Everything the hubs recorded about one document."""

    document_id: str
    rows: list[AuditRow] = field(default_factory=list)

    def hop_records(self) -> list[HopRecord]:
        return [parse_record(r.body) for r in self.rows if r.kind == "hop"]

    def digests(self) -> set[str]:
        return {r.digest for r in self.rows}


def collect(stores: Iterable[SqlStore], document_id: str) -> Trail:
    rows: list[AuditRow] = []
    seen: set[tuple[str, int]] = set()
    for store in stores:
        for row in store.audit_rows(document_id=document_id):
            if (row.hub, row.seq) not in seen:
                seen.add((row.hub, row.seq))
                rows.append(row)
    rows.sort(key=lambda r: (r.at, r.hub, r.seq))
    return Trail(document_id, rows)


def verified_timeline(trail: Trail, hub_certs: dict[str, x509.Certificate], trust: TrustStore) -> list[dict[str, Any]]:
    """The trail as a timeline, each hop record's hub signature and each receipt verified (a bad
    one raises): hub, entry, time, kind, verdict, code, targets, digest."""
    out: list[dict[str, Any]] = []
    for row in trail.rows:
        if row.kind == "hop":
            rec = verify_record(row.body, hub_certs[row.hub])
            out.append({"hub": row.hub, "seq": row.seq, "at": rec.at, "kind": "hop", "verdict": rec.verdict,
                        "code": rec.code, "targets": list(rec.targets), "digest": rec.digest,
                        "message": rec.extra.get("kind", ""), "signature": "ok"})
        else:
            r = receipts.verify(row.body.encode(), trust).receipt
            out.append({"hub": row.hub, "seq": row.seq, "at": r.time, "kind": "receipt", "verdict": r.kind,
                        "code": r.code, "targets": [r.sender], "digest": r.document_sha256, "signature": "ok"})
    return out
