"""A small web dashboard for hub operators (pages: ``dashboard_page``); it only reads.

    lienthong dashboard --port 8090      # binds 127.0.0.1: put it behind your admin proxy

A request must name an allowed host (loopback names, the bound address, ``--allow-host``): an
operator's browser led to another site whose name resolves to 127.0.0.1 (DNS rebinding) gets
421.  With a token, a request must carry it: ``Authorization: Bearer``, or ``?token=`` once,
which sets a cookie (HttpOnly, SameSite=Strict).  Bound to any address but loopback, the
dashboard needs a token: the Host check alone would let in anyone who sends ``Host: 127.0.0.1``.

Pages are in Vietnamese unless the reader asks otherwise: ``?lang=en`` (remembered in a cookie),
else the browser's ``Accept-Language``.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from broker import i18n
from broker.core.errors import HostNotAllowed, UsageError
from broker.i18n import N_, _
from broker.ops import dashboard_page
from broker.relay.assemble import topology_in_force
from broker.settings import Settings

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
LANG_COOKIE = "lienthong_lang"


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _language(request: Request) -> str:
    return (i18n.parse(request.query_params.get("lang")) or i18n.parse(request.cookies.get(LANG_COOKIE))
            or i18n.negotiate(request.headers.get("accept-language")))


def create_app(settings: Settings | None = None, *, allow_hosts: tuple[str, ...] = (),
               token: str | None = None, bind: str = "127.0.0.1") -> FastAPI:
    """The dashboard's application; ``bind`` is the address it will be served on (any but loopback
    needs a ``token``: UsageError otherwise)."""
    if token is None and not is_loopback(bind):
        raise UsageError(N_("the dashboard on {host}, not loopback, needs a token (--token-file)"), host=bind)
    settings = settings or Settings.from_env()
    app = FastAPI(title="lienthong dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    allowed = {h.lower() for h in (*LOOPBACK_NAMES, bind, *allow_hosts)}

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        i18n.use(_language(request))
        host = request.headers.get("host", "").lower()
        name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        if name not in allowed and host not in allowed:
            refused = HostNotAllowed(N_("this dashboard does not serve {host!r}"), host=host)
            return JSONResponse({"code": refused.code, "message": refused.render(i18n.current().gettext)},
                                status_code=421)
        if token is not None:
            given = (request.headers.get("authorization", "")[7:] or request.cookies.get("lienthong_dashboard")
                     or request.query_params.get("token") or "")
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                return JSONResponse({"code": "UNAUTHORIZED", "message": _("this dashboard needs its token")},
                                    status_code=401)
        response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie("lienthong_dashboard", token, httponly=True, samesite="strict")
        if i18n.parse(request.query_params.get("lang")):
            response.set_cookie(LANG_COOKIE, i18n.language(), httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> str:
        i18n.use(_language(request))
        return dashboard_page.overview(settings, topology_in_force(settings))

    @app.get("/parked/{hub}/{digest}", response_class=HTMLResponse)
    def parked(request: Request, hub: str, digest: str) -> Any:
        i18n.use(_language(request))
        topology = topology_in_force(settings)
        page = dashboard_page.parked(settings, hub, digest) if hub in topology.hubs else None
        if page is None:
            return JSONResponse({"code": "NOT_FOUND", "message": _("no parked message {digest!r} at hub {hub!r}",
                                                                   digest=digest, hub=hub)}, status_code=404)
        return HTMLResponse(page)

    return app
