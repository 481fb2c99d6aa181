"""The compliance report (``lienthong report``): the figures provinces report on, from the hubs'
own audit logs (the signed receipts and hop records a hub stores with each message it handles).

Per agency, for the days ``--from`` .. ``--to`` (local time, ``settings.report.utc_offset``):

- ``submitted``: documents the agency handed to its hub (``sent`` + ``refused``);
- ``sent``: accepted at its hub: schema, signature, certificate chain and signer = ``From`` all
  checked.  Everything the relay carries is digitally signed, so the share reported against the
  province's targets is ``sent / submitted``, or ``sent / issued`` when the agency's register
  of outgoing documents is given (``--issued``): the share that went out signed and electronically;
- ``refused``: refused at entry and never accepted (by code in the CSV);
- ``received``: documents delivered into the agency's inbox;
- ``acknowledged``: of those, answered with status 01 (received) or 03 (accepted) within
  ``settings.report.ack_deadline_hours`` of delivery (``late``: answered after it);
- ``statuses``: statuses the agency sent, by code.

Agencies are grouped by ``level`` (topology; default their hub's tier) and each level's share is
shown against ``settings.report.targets``.  This module counts; ``report_layout`` says it in the
reader's language, as text or for ``report_xlsx`` and ``report_pdf``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from broker.core import edxml, receipts
from broker.core.errors import LienthongError, UsageError
from broker.core.hoprecords import parse_record
from broker.core.outcome import Verdict
from broker.core.parsing import DEFAULT_LIMITS, parse
from broker.core.topology import Topology
from broker.i18n import N_
from broker.relay.store import SqlStore

ACK_CODES = ("01", "03")


@dataclass(frozen=True)
class ReportSettings:
    ack_deadline: timedelta
    offset: timezone
    targets: Mapping[str, float]
    unit: str | None = None
    """The reporting unit named on the report (``settings.report.unit``; ``--unit`` wins)."""

    @classmethod
    def from_topology(cls, topology: Topology) -> ReportSettings:
        """From ``settings.report``, checked when the topology was read."""
        raw = topology.settings.report
        sign = -1 if raw.utc_offset.startswith("-") else 1
        hh, mm = raw.utc_offset.lstrip("+-").replace(":", "")[:2], raw.utc_offset.replace(":", "")[-2:]
        offset = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
        return cls(timedelta(hours=raw.ack_deadline_hours), offset, dict(raw.targets), raw.unit or None)


@dataclass
class Figures:
    """One agency's figures (or a level's sums)."""

    submitted: int = 0
    sent: int = 0
    refused: int = 0
    received: int = 0
    acknowledged: int = 0
    late: int = 0
    issued: int | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    refused_codes: Counter[str] = field(default_factory=Counter)

    @property
    def basis(self) -> int:
        """What the signed-and-sent share is taken of: the register if given, else what was submitted."""
        return self.issued if self.issued is not None else self.submitted

    @property
    def signed_share(self) -> float | None:
        return self.sent / self.basis if self.basis else None

    @property
    def ack_share(self) -> float | None:
        return self.acknowledged / self.received if self.received else None

    @classmethod
    def total(cls, parts: Sequence[Figures]) -> Figures:
        """Sums; where any part has a register, the basis is the sum of each part's basis."""
        out = cls()
        for f in parts:
            for name in ("submitted", "sent", "refused", "received", "acknowledged", "late"):
                setattr(out, name, getattr(out, name) + getattr(f, name))
            out.statuses.update(f.statuses)
            out.refused_codes.update(f.refused_codes)
        if any(f.issued is not None for f in parts):
            out.issued = sum(f.basis for f in parts)
        return out


@dataclass
class Report:
    start: datetime
    end: datetime
    settings: ReportSettings
    agencies: dict[str, Figures]
    levels: dict[str, Figures]
    names: dict[str, str]
    level_of: dict[str, str]

    def target(self, level: str) -> float | None:
        return self.settings.targets.get(level)


@dataclass(frozen=True)
class _Delivery:
    sender: str
    document_id: str
    at: float


def period(start: date, end: date, offset: timezone) -> tuple[datetime, datetime]:
    """``[start 00:00, end + 1 day 00:00)`` in local time."""
    if end < start:
        raise UsageError(N_("--to {end} is before --from {start}"), end=end, start=start)
    return (datetime.combine(start, datetime.min.time(), offset),
            datetime.combine(end + timedelta(days=1), datetime.min.time(), offset))


def read_issued(path: Path, topology: Topology) -> dict[str, int]:
    """The agencies' registers: a CSV with columns ``organ_id,issued``."""
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except OSError as exc:
        raise UsageError(N_("cannot read {path}: {reason}"), path=path, reason=exc.strerror) from None
    out: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        organ, count = (row.get("organ_id") or "").strip(), (row.get("issued") or "").strip()
        if organ not in topology.agencies:
            raise UsageError(N_("{path}:{line}: agency {organ!r} is not in the agency directory"), path=path, line=n,
                             organ=organ)
        if not count.isdigit():
            raise UsageError(N_("{path}:{line}: issued must be a whole number, not {value!r}"), path=path, line=n,
                             value=count)
        out[organ] = int(count)
    return out


def build(stores: Sequence[SqlStore], topology: Topology, start: datetime, end: datetime,
          *, issued: Mapping[str, int] | None = None) -> Report:
    cfg = ReportSettings.from_topology(topology)
    t0, t1 = start.timestamp(), end.timestamp()
    horizon = t1 + cfg.ack_deadline.total_seconds()  # an answer may come after the period ends
    accepted: dict[str, tuple[str, float]] = {}
    refused: dict[str, tuple[str, str, float]] = {}
    deliveries: dict[tuple[str, str], _Delivery] = {}
    statuses: list[tuple[str, float]] = []
    for store in stores:
        for row in store.audit_rows(since=t0, until=horizon):
            if row.kind == "receipt":
                r = receipts.read_bytes(row.body.encode())
                if r.kind == "accepted":
                    accepted.setdefault(row.digest, (r.sender, row.at))
                elif r.kind == "delivered":
                    for to in r.recipients:
                        deliveries.setdefault((row.digest, to), _Delivery(r.sender, r.document_id, row.at))
                else:
                    refused.setdefault(row.digest, (r.sender, r.code, row.at))
            elif row.kind == "hop":
                rec = parse_record(row.body)
                if rec.extra.get("kind") == "status" and not rec.prev and rec.verdict != Verdict.REJECTED:
                    statuses.append((row.digest, row.at))

    figures = {a: Figures(issued=(issued or {}).get(a)) for a in topology.agencies}

    def message(digest: str) -> edxml.Message | None:
        data = next((d for s in stores if (d := s.message(digest)) is not None), None)
        try:
            return edxml.read(parse(data, DEFAULT_LIMITS)) if data is not None else None
        except LienthongError:
            return None

    answers: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
    for digest, at in statuses:
        m = message(digest)
        if m is None or m.response_for is None or m.status_code is None:
            continue
        key = (m.sender.organ_id, m.response_for.organ_id, m.document_id)
        answers.setdefault(key, []).append((at, m.status_code))
        if t0 <= at < t1 and m.sender.organ_id in figures:
            figures[m.sender.organ_id].statuses[m.status_code] += 1
    for sender, at in accepted.values():
        if t0 <= at < t1 and sender in figures:
            figures[sender].sent += 1
    for digest, (sender, code, at) in refused.items():
        if digest in accepted or not (t0 <= at < t1) or sender not in figures:
            continue
        m = message(digest)
        if m is not None and m.kind == "status":
            continue  # a refused status is not a document the agency failed to send
        figures[sender].refused += 1
        figures[sender].refused_codes[code] += 1
    deadline = cfg.ack_deadline.total_seconds()
    for (_digest, to), d in deliveries.items():
        if not (t0 <= d.at < t1) or to not in figures:
            continue
        f = figures[to]
        f.received += 1
        times = [at for at, code in answers.get((to, d.sender, d.document_id), []) if code in ACK_CODES]
        if times:
            if min(times) - d.at <= deadline:
                f.acknowledged += 1
            else:
                f.late += 1
    for f in figures.values():
        f.submitted = f.sent + f.refused
    members: dict[str, list[Figures]] = {}
    for organ, f in figures.items():
        members.setdefault(topology.agencies[organ].level or "-", []).append(f)
    levels = {level: Figures.total(parts) for level, parts in sorted(members.items())}
    return Report(start, end, cfg, figures, levels,
                  {a.organ_id: a.name for a in topology.agencies.values()},
                  {a.organ_id: a.level or "-" for a in topology.agencies.values()})


# --- output -------------------------------------------------------------------------------

COLUMNS = ("scope", "id", "name", "level", "submitted", "sent", "refused", "issued", "signed_share",
           "target", "meets_target", "received", "acknowledged", "late", "ack_share", "statuses",
           "refused_codes")


def _share(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _codes(c: Counter[str]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(c.items()))


def rows(report: Report) -> list[dict[str, Any]]:
    out = []
    for scope, items in (("agency", report.agencies), ("level", report.levels)):
        for key, f in items.items():
            level = report.level_of[key] if scope == "agency" else key
            target = report.target(level)
            share = f.signed_share
            out.append({
                "scope": scope, "id": key, "name": report.names.get(key, "") if scope == "agency" else "",
                "level": level, "submitted": f.submitted, "sent": f.sent, "refused": f.refused,
                "issued": "" if f.issued is None else f.issued, "signed_share": _share(share),
                "target": _share(target),
                "meets_target": "" if target is None or share is None else ("yes" if share >= target else "no"),
                "received": f.received, "acknowledged": f.acknowledged, "late": f.late,
                "ack_share": _share(f.ack_share), "statuses": _codes(f.statuses),
                "refused_codes": _codes(f.refused_codes)})
    return out


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows(report))
    return buf.getvalue()


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(N_("{value!r} is not a date (YYYY-MM-DD)"), value=text) from None

