"""The dashboard's pages, in the current language: the overview (the hub tree as a picture, the
traffic of the last hours, the hubs' queues, recent refusals, the parked messages) and one parked
message with its reason.  Server-rendered HTML, refreshed every few seconds; no script.
A refusal's reason is the sentence the hub recorded, in English; a reader of another language sees
the meaning of its code above it (:mod:`broker.ops.reasons` says why).
"""

from __future__ import annotations

import json
from html import escape as e

from broker import i18n
from broker.core.topology import Topology
from broker.i18n import _
from broker.ops import pictures, queues, reasons, traffic
from broker.ops.report_layout import level_name
from broker.settings import Settings

STYLE = """body{font-family:'DejaVu Sans',sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#eef}.warn{color:#a40}.bad{color:#b00;font-weight:bold}.num{text-align:right}
.key{margin-right:1.2em}.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
nav{float:right}svg.tree{max-width:100%;height:auto}pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em}
.recorded{color:#555}"""


def _head(title: str, refresh: bool) -> str:
    lang = i18n.language()
    meta = "<meta http-equiv='refresh' content='5'>" if refresh else ""
    other = {"vi": "<a href='?lang=en' hreflang='en'>English</a>",
             "en": "<a href='?lang=vi' hreflang='vi'>Tiếng Việt</a>"}[lang]
    return (f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>{meta}<title>{e(title)}</title>"
            f"<style>{STYLE}</style></head><body><nav>{other}</nav><h1>{e(title)}</h1>")


def _order(topology: Topology) -> list[str]:
    order: list[str] = []

    def walk(hub_id: str) -> None:
        order.append(hub_id)
        for child in sorted(h.hub_id for h in topology.hubs.values() if h.parent == hub_id):
            walk(child)

    for root in sorted(h.hub_id for h in topology.hubs.values() if h.parent is None):
        walk(root)
    return order


def _heads(*labels: str) -> str:
    return "<tr>" + "".join(f"<th>{e(label)}</th>" for label in labels) + "</tr>"


def _h2(text: str) -> str:
    return f"<h2>{e(text)}</h2>"


def _reason(code: str, recorded: str) -> str:
    """A refusal's reason cell: the code's meaning in the reader's language over the sentence as
    the hub recorded it (marked as English), or that sentence alone for a reader of English."""
    if not reasons.explained(code):
        return f"<td>{e(recorded)}</td>"
    return (f"<td>{e(reasons.meaning(code))}<br><small lang='{reasons.RECORDED_IN}' class='recorded'>"
            f"{e(recorded)}</small></td>")


def overview(settings: Settings, topology: Topology) -> str:
    hubs = {h.hub: h for h in queues.status(settings)}
    moves, refusals = traffic.read(settings, topology)
    order = _order(topology)
    cat = i18n.current()
    minutes = traffic.HOURS * 60 // traffic.SLOTS
    out = [_head(_("lienthong: hubs"), refresh=True), _h2(_("The hub tree")), pictures.hub_tree(topology, hubs),
           f"<p>{pictures.legend()}</p>", _h2(_("Traffic over the last {hours} hours", hours=traffic.HOURS)),
           "<p>" + e(_("One bar per {minutes} minutes: blue, documents and statuses passed on; red, refused.",
                       minutes=minutes)) + "</p>",
           "<table class='traffic'>" + _heads(_("hub"), _("traffic"), _("passed on"), _("refused"))]
    for hub_id in order:
        t = moves[hub_id]
        out.append(f"<tr><td>{e(topology.hubs[hub_id].name)}</td><td>{pictures.bars(t.passed, t.refused)}</td>"
                   f"<td class=num>{cat.number(sum(t.passed))}</td>"
                   f"<td class=num>{cat.number(sum(t.refused))}</td></tr>")
    out += ["</table>", _h2(_("Hubs")),
            "<table>" + _heads(_("hub"), _("tier"), _("state"), _("ingress"), _("unacked"), _("workers"), _("in/s"),
                               _("parked"), _("retrying"), _("inboxes waiting"), _("oldest"), _("cert days"),
                               _("warnings"))]
    for hub_id in order:
        st = hubs[hub_id]
        ing = st.ingress
        ages = [q.oldest_seconds for q in st.inboxes if q.oldest_seconds is not None]
        colour, label = pictures.STATES[pictures.state(st)]
        state, tier = _(label), level_name(st.tier)
        depth = len(topology.path_to_root(hub_id)) - 1
        parked = (f"<a href='#parked-{e(hub_id)}'>{st.parked}</a>" if st.parked else "0")
        out.append(
            f"<tr id='hub-{e(hub_id)}'><td>{'&nbsp;' * 4 * depth}{e(hub_id)} {e(topology.hubs[hub_id].name)}</td>"
            f"<td>{e(tier)}</td><td><span class='swatch' style='background:{colour}'></span>{e(state)}</td>"
            f"<td class=num>{ing.messages if ing else '-'}</td>"
            f"<td class=num>{ing.unacked if ing else '-'}</td><td class=num>{ing.consumers if ing else 0}</td>"
            f"<td class=num>{ing.in_rate if ing else 0:.1f}</td>"
            f"<td class='num{' bad' if st.parked else ''}'>{parked}</td><td class=num>{st.retrying}</td>"
            f"<td class=num>{sum(q.messages for q in st.inboxes)}</td>"
            f"<td class=num>{queues.format_age(max(ages)) if ages else '-'}</td>"
            f"<td class=num>{st.cert_days_left}</td><td class=warn>{e('; '.join(st.warnings))}</td></tr>")
    out += ["</table>", _h2(_("Recent refusals")),
            "<table>" + _heads(_("time"), _("hub"), _("code"), _("document"), _("reason"))]
    for r in refusals:
        out.append(f"<tr><td>{e(r.at)}</td><td>{e(r.hub)}</td><td class=bad>{e(r.code)}</td>"
                   f"<td>{e(r.document_id)}</td>{_reason(r.code, r.reason)}</tr>")
    out += ["</table>", _h2(_("Parked messages")),
            "<table>" + _heads(_("hub"), _("message"), _("code"), _("from"), _("reason"))]
    for hub_id in (h for h in order if not hubs[h].unreadable):
        for n, p in enumerate(queues.list_parked(settings, hub_id, limit=50)):
            anchor = f" id='parked-{e(hub_id)}'" if n == 0 else ""
            out.append(f"<tr{anchor}><td>{e(hub_id)}</td><td><a href='parked/{e(hub_id)}/{e(p.digest)}'>"
                       f"{p.digest[:16]}</a></td><td class=bad>{e(p.code)}</td><td>{e(p.origin)}</td>"
                       f"{_reason(p.code, p.reason)}</tr>")
    out.append("</table></body></html>")
    return "".join(out)


def parked(settings: Settings, hub: str, digest: str) -> str | None:
    """One parked message: why it was parked, where from, and how to replay it; None if not parked."""
    found = next((p for p in queues.list_parked(settings, hub) if p.digest == digest), None)
    if found is None:
        return None
    headers = {k: v for k, v in found.headers.items() if isinstance(v, (str, int, float, list))}
    rows = ((_("hub"), hub), (_("code"), found.code), (_("meaning"), reasons.meaning(found.code) or "-"),
            (_("reason"), found.reason), (_("from"), found.origin),
            (_("size"), _("{n} bytes", n=i18n.current().number(found.size))), ("SHA-256", found.digest),
            (_("to replay it"), f"lienthong dlq replay {hub} --digest {found.digest[:16]}"))
    back = e(_("Back to the hubs"))
    return (_head(_("Parked message at hub {hub}", hub=hub), refresh=False)
            + f"<p><a href='../../'>{back}</a></p><table>"
            + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows) + "</table>"
            + _h2(_("Headers")) + "<pre>" + e(json.dumps(headers, ensure_ascii=False, indent=2, default=str)) + "</pre>"
            + _h2(_("Message")) + "<pre>" + e(found.body[:20000].decode("utf-8", errors="replace")) + "</pre>"
            + "</body></html>")
