"""A small web dashboard for hub operators: the hub tree with live backlogs, recent rejections,
parked messages and warnings.  Server-rendered HTML refreshed every few seconds; it only reads.

    lienthong dashboard --port 8090      # binds 127.0.0.1: put it behind your admin proxy

A request must name an allowed host (loopback names, the bound address, ``--allow-host``): an
operator's browser led to another site whose name resolves to 127.0.0.1 (DNS rebinding) gets
421.  With a token, a request must carry it: ``Authorization: Bearer``, or ``?token=`` once,
which sets a cookie (HttpOnly, SameSite=Strict).
"""

from __future__ import annotations

import hmac
import html
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from broker.core.hoprecords import parse_record
from broker.core.topology import Topology
from broker.ops import queues
from broker.relay.store import open_store
from broker.settings import Settings

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#eef}.warn{color:#a40}.bad{color:#b00;font-weight:bold}.num{text-align:right}"""


def recent_rejections(settings: Settings, topology: Topology, limit: int = 20) -> list[dict[str, str]]:
    rows = []
    for hub in topology.hubs:
        try:
            store = open_store(settings.state_url, hub=hub)
        except Exception:  # noqa: BLE001 - a hub without a store yet has nothing to show
            continue
        for row in store.audit_rows(hub=hub, newest=500):
            if row.kind == "hop":
                rec = parse_record(row.body)
                if rec.verdict == "rejected":
                    rows.append({"at": rec.at, "hub": hub, "code": rec.code, "document_id": rec.document_id,
                                 "reason": rec.extra.get("reason", "")})
        store.close()
    return sorted(rows, key=lambda r: r["at"], reverse=True)[:limit]


def render(settings: Settings) -> str:
    topology = Topology.load(settings.topology)
    hubs = {h.hub: h for h in queues.status(settings)}
    e = html.escape

    def depth(hub_id: str) -> int:
        return len(topology.path_to_root(hub_id)) - 1

    order: list[str] = []

    def walk(hub_id: str) -> None:
        order.append(hub_id)
        for child in sorted(h.hub_id for h in topology.hubs.values() if h.parent == hub_id):
            walk(child)

    walk(next(h.hub_id for h in topology.hubs.values() if h.parent is None))
    out = [f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='5'>"
           f"<title>lienthong hubs</title><style>{STYLE}</style></head><body><h1>lienthong: hubs</h1>",
           "<table><tr><th>hub</th><th>tier</th><th>ingress</th><th>unacked</th><th>workers</th>"
           "<th>in/s</th><th>parked</th><th>retrying</th><th>inboxes waiting</th><th>oldest</th><th>cert days</th>"
           "<th>warnings</th></tr>"]
    for hub_id in order:
        st = hubs[hub_id]
        ing: Any = st.ingress
        waiting = sum(q.messages for q in st.inboxes)
        ages = [q.oldest_seconds for q in st.inboxes if q.oldest_seconds is not None]
        oldest = queues.format_age(max(ages)) if ages else "-"
        warn = "; ".join(st.warnings)
        out.append(
            f"<tr><td>{'&nbsp;' * 4 * depth(hub_id)}{e(hub_id)} {e(topology.hubs[hub_id].name)}</td>"
            f"<td>{e(st.tier)}</td><td class=num>{ing.messages if ing else '-'}</td>"
            f"<td class=num>{ing.unacked if ing else '-'}</td><td class=num>{ing.consumers if ing else 0}</td>"
            f"<td class=num>{ing.in_rate if ing else 0:.1f}</td>"
            f"<td class='num{' bad' if st.parked else ''}'>{st.parked}</td><td class=num>{st.retrying}</td>"
            f"<td class=num>{waiting}</td><td class=num>{oldest}</td><td class=num>{st.cert_days_left}</td>"
            f"<td class=warn>{e(warn)}</td></tr>")
    out.append("</table><h2>Recent rejections</h2><table><tr><th>time</th><th>hub</th><th>code</th>"
               "<th>document</th><th>reason</th></tr>")
    for r in recent_rejections(settings, topology):
        out.append(f"<tr><td>{e(r['at'])}</td><td>{e(r['hub'])}</td><td class=bad>{e(r['code'])}</td>"
                   f"<td>{e(r['document_id'])}</td><td>{e(r['reason'])}</td></tr>")
    out.append("</table><h2>Parked messages</h2><table><tr><th>hub</th><th>digest</th><th>code</th>"
               "<th>from</th><th>reason</th></tr>")
    for hub_id in order:
        for p in queues.list_parked(settings, hub_id, limit=50):
            out.append(f"<tr><td>{e(hub_id)}</td><td>{p.digest[:16]}</td><td class=bad>{e(p.code)}</td>"
                       f"<td>{e(p.origin)}</td><td>{e(p.reason)}</td></tr>")
    out.append("</table></body></html>")
    return "".join(out)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(settings: Settings | None = None, *, allow_hosts: tuple[str, ...] = (),
               token: str | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(title="lienthong dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    allowed = {h.lower() for h in (*LOOPBACK_NAMES, *allow_hosts)}

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        host = request.headers.get("host", "").lower()
        name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        if name not in allowed and host not in allowed:
            return JSONResponse({"code": "HOST_NOT_ALLOWED", "message": f"this dashboard does not serve {host!r}"},
                                status_code=421)
        if token is None:
            return await call_next(request)
        given = (request.headers.get("authorization", "")[7:] or request.cookies.get("lienthong_dashboard")
                 or request.query_params.get("token") or "")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return JSONResponse({"code": "UNAUTHORIZED", "message": "this dashboard needs its token"},
                                status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie("lienthong_dashboard", token, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return render(settings)

    return app
