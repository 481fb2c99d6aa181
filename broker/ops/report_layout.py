"""What the compliance report says to its reader, in the current language: its title, period and
reporting unit, the table per level against the targets, the table per agency, the chart's
figures and the notes.  ``to_text`` prints it on a terminal; ``report_xlsx`` and ``report_pdf``
lay the same ``Layout`` out as a workbook and a document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from broker import i18n
from broker.i18n import N_, _
from broker.ops.report import Figures, Report

LEVELS = {"ministry": N_("ministry"), "national": N_("national"), "province": N_("province"),
          "department": N_("department"), "district": N_("district"), "commune": N_("commune"),
          "-": N_("(no level)")}
"""Levels as the topology names them, shown in the reader's words (others as written)."""
ORDER = list(LEVELS)

Cell = str | int | float | None
"""A table cell: text, a count, or a share between 0 and 1 (None: nothing to show)."""


@dataclass(frozen=True)
class Table:
    title: str
    headings: list[str]
    kinds: list[str]
    """Per column: ``text``, ``count`` or ``share``."""
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Bar:
    label: str
    share: float | None
    target: float | None


@dataclass(frozen=True)
class Layout:
    title: str
    period: str
    unit: str
    made: str
    levels: Table
    agencies: Table
    chart_title: str
    chart: list[Bar]
    share_label: str
    target_label: str
    notes: list[str]


def level_name(level: str) -> str:
    return _(LEVELS[level]) if level in LEVELS else level


def _verdict(share: float | None, target: float | None) -> str:
    if share is None or target is None:
        return ""
    return _("meets the target") if share >= target else _("below the target")


def _deadline(report: Report) -> str:
    seconds = report.settings.ack_deadline.total_seconds()
    if seconds >= 3600:
        return _("{n} h", n=i18n.current().number(round(seconds / 3600, 2)))
    return _("{n} s", n=i18n.current().number(round(seconds, 2)))


def _levels(report: Report) -> list[tuple[str, Figures]]:
    return sorted(report.levels.items(), key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER), kv[0]))


def layout(report: Report, *, unit: str, made: date) -> Layout:
    """The report as its reader reads it (``unit``: the reporting unit; ``made``: the day it is made)."""
    cat = i18n.current()
    last = (report.end - timedelta(days=1)).date()
    level_rows: list[list[Cell]] = []
    for level, f in _levels(report):
        target = report.target(level)
        level_rows.append([level_name(level), f.submitted, f.sent, f.refused, f.issued, f.basis, f.signed_share,
                           target, _verdict(f.signed_share, target), f.received, f.acknowledged, f.ack_share])
    agency_rows: list[list[Cell]] = []
    for organ, f in report.agencies.items():
        level = report.level_of[organ]
        target = report.target(level)
        agency_rows.append([organ, report.names.get(organ, ""), level_name(level), f.submitted, f.sent, f.refused,
                            f.signed_share, target, f.received, f.acknowledged, f.late, f.ack_share])
    return Layout(
        title=_("REPORT ON ELECTRONIC DOCUMENTS SENT AND RECEIVED THROUGH THE INTERCONNECTION AXIS"),
        period=_("Reporting period: from {start} to {end} (UTC{offset})", start=cat.day(report.start.date()),
                 end=cat.day(last), offset=report.start.strftime("%z")),
        unit=_("Reporting unit: {unit}", unit=unit),
        made=_("Made on {day}", day=cat.day(made)),
        levels=Table(_("1. Share of documents signed and sent electronically, per level, against the target"),
                     [_("Level"), _("Submitted to the hub"), _("Sent (signature valid)"), _("Refused"),
                      _("Issued (register)"), _("Basis"), _("Share signed and sent"), _("Target"),
                      _("Assessment"), _("Received"), _("Acknowledged in time"), _("Share acknowledged in time")],
                     ["text", "count", "count", "count", "count", "count", "share", "share", "text", "count",
                      "count", "share"], level_rows),
        agencies=Table(_("2. Per agency"),
                       [_("Agency code"), _("Agency"), _("Level"), _("Submitted to the hub"),
                        _("Sent (signature valid)"), _("Refused"), _("Share signed and sent"), _("Target"),
                        _("Received"), _("Acknowledged in time"), _("Acknowledged late"),
                        _("Share acknowledged in time")],
                       ["text", "text", "text", "count", "count", "count", "share", "share", "count", "count",
                        "count", "share"], agency_rows),
        chart_title=_("Share signed and sent electronically, per level, against the target"),
        chart=[Bar(level_name(level), f.signed_share, report.target(level)) for level, f in _levels(report)],
        share_label=_("Share signed and sent"),
        target_label=_("Target"),
        notes=[_("Share signed and sent = documents sent with a valid signature / basis; the basis is the "
                 "agencies' register of outgoing documents (paper included) where given, else the documents "
                 "submitted to the hub."),
               _("Acknowledged in time: status 01 (received) or 03 (accepted) within {deadline} of delivery.",
                 deadline=_deadline(report)),
               _("Figures from the hubs' signed audit logs.")])


def _table(headings: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Columns as wide as their widest cell; the first ``left`` columns aligned left, the others right."""
    widths = [max(len(str(c)) for c in col) for col in zip(headings, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return " ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))
    return [line(headings).rstrip(), *(line(r).rstrip() for r in rows)]


def _codes(f: Figures) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(f.statuses.items())) or "-"


def to_text(report: Report) -> str:
    """The report for a terminal: agencies with activity, then levels against their targets."""
    cat = i18n.current()
    last = (report.end - timedelta(days=1)).date()
    lines = [_("Compliance report {start} .. {end} (UTC{offset}); acknowledged = status 01/03 within {deadline} "
               "of delivery", start=cat.day(report.start.date()), end=cat.day(last),
               offset=report.start.strftime("%z"), deadline=_deadline(report)), ""]
    agencies = [[organ, level_name(report.level_of[organ]), cat.number(f.submitted), cat.number(f.sent),
                 cat.percent(f.signed_share), cat.number(f.received), cat.number(f.acknowledged), cat.number(f.late),
                 cat.percent(f.ack_share), _codes(f)]
                for organ, f in report.agencies.items() if f.submitted or f.received or f.statuses or f.issued]
    lines += _table([_("agency"), _("level"), _("submitted"), _("sent"), _("signed"), _("received"), _("acked"),
                     _("late"), _("acked%"), _("statuses")], agencies, 2)
    levels = []
    for level, f in _levels(report):
        target = report.target(level)
        met = "-" if target is None or f.signed_share is None else (
            _("yes") if f.signed_share >= target else _("NO"))
        levels.append([level_name(level), cat.number(f.submitted), cat.number(f.sent), cat.number(f.basis),
                       cat.percent(f.signed_share), cat.percent(target), met, cat.number(f.received),
                       cat.percent(f.ack_share)])
    lines += [""] + _table([_("level"), _("submitted"), _("sent"), _("basis"), _("signed"), _("target"), _("met"),
                            _("received"), _("acked%")], levels, 1)
    lines += ["", _("signed = sent / basis; basis = the register (--issued) where given, else submitted")]
    return "\n".join(lines) + "\n"
