"""REST gateway: HTTP + JSON for document systems that do not speak AMQP.

The verbs are those DMSs already call on the national axis (send an edoc, list
and get received edocs, update a transfer status, list sent edocs with their
statuses, list agencies), under ``/v1``; the OpenAPI description is served at
``/openapi.json`` and kept in ``docs/openapi.json``.  The same server answers the national
axis' own client protocol under ``/vxp`` (:mod:`adapters.vxp`), over the same mailbox.

Each request carries ``Authorization: Bearer <token>`` (a token belongs to one agency and
expires; ``lienthong gateway token issue|rotate|revoke|list``, see :mod:`adapters.tokens`), or,
over mutual TLS, a client certificate whose subject UID is the agency's code, not revoked and, where
the directory pins the agency's certificates, pinned (:mod:`adapters.clientcerts`).  An agency sees
only its own documents.  Bodies are bounded on every route (the message limit on
``POST /v1/documents``, :data:`SMALL_BODY` elsewhere) and each agency has at most
``max_uploads`` uploads in progress.  ``/openapi.json`` needs a token; there is no ``/docs`` page
(it would load scripts from elsewhere) and no ``/metrics`` here (``gateway run --metrics-port``
serves them on loopback).  Received messages are taken from the agency's inbox into the
gateway's mailbox (:mod:`adapters.mailbox`) when the agency asks for them, so nothing is acked
on the broker before it is safely stored here.  Errors are JSON ``{"code": ..., "message": ...}``
with the codes of docs/errors.md; the message is in the language the request's ``Accept-Language``
prefers (``vi`` or ``en``), else in the gateway's (``create_app``'s ``lang``); the code never changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter

from broker import i18n
from broker.core import errors
from broker.core.topology import Topology
from broker.i18n import N_
from broker.settings import Settings

from . import vxp
from .clientcerts import ClientCertificates
from .https import client_certificate
from .mailbox import TRANSFER_STATUSES
from .sdk import AgencyClient
from .serving import Gateway, bounded
from .tokens import DEFAULT_DAYS, TokenBook

REQUESTS = Counter("lienthong_gateway_requests_total", "Gateway requests by route and status", ["route", "status"])
HTTP_STATUS = {"USAGE": 400, "UNAUTHORIZED": 401, "ACCESS_REFUSED": 403, "SENDER_NOT_ALLOWED": 403,
               "NOT_FOUND": 404, "XML_TOO_LARGE": 413, "BODY_TOO_LARGE": 413, "TOO_MANY_UPLOADS": 429,
               "TRANSIENT": 503}
SMALL_BODY = 64 * 1024
"""The body limit of every route but ``POST /v1/documents`` (and the axis protocol's, which
bounds its own)."""
DOCUMENTS = "/v1/documents"


# --- tokens -------------------------------------------------------------------------------


def tokens(settings: Settings) -> TokenBook:
    return TokenBook(settings.data_dir / "gateway-tokens.yaml")


def issue_token(settings: Settings, agency: str, days: float = DEFAULT_DAYS) -> str:
    """A new bearer token for ``agency`` (which must be in the directory), valid ``days``."""
    Topology.load(settings.topology).agency(agency)
    return tokens(settings).issue(agency, days)[1]


# --- the application ---------------------------------------------------------------------


def create_app(settings: Settings, *, connect: Callable[[str], AgencyClient],
               max_bytes: int | None = None, max_uploads: int = 4, client_ca: Path | None = None,
               vxp_hmac_only: bool = False, lang: str | None = None) -> FastAPI:
    """The gateway over ``settings``' topology and data directory; ``connect(agency)`` opens that
    agency's own client (its broker account, its handed-over store).  ``client_ca``: the CAs (and
    their CRLs) client certificates are judged by, as given to the TLS server; without it no client
    certificate is accepted.  ``vxp_hmac_only``: the axis protocol without mutual TLS
    (:mod:`adapters.vxp`).  ``lang``: the language of refusals to a client whose ``Accept-Language``
    names neither of ours (the national axis' SDK sends none): by default ``LIENTHONG_LANG``'s, else
    Vietnamese."""
    default = lang or i18n.parse(os.environ.get("LIENTHONG_LANG")) or i18n.DEFAULT
    gw = Gateway(settings, connect, max_bytes=max_bytes, max_uploads=max_uploads)
    topology, store = gw.topology, gw.mailbox
    clients = ClientCertificates(client_ca, topology) if client_ca else None
    app = FastAPI(title="lienthong gateway", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Send and receive edXML documents through the lienthong relay.")
    book = tokens(settings)

    def reader(request: Request) -> i18n.Catalogue:
        """The catalogue of the language the request prefers."""
        return i18n.catalogue(i18n.negotiate(request.headers.get("accept-language"), default))

    def agency_of(request: Request) -> str:
        cert = client_certificate(request.scope)
        if cert is not None:  # the TLS handshake verified its chain against the client CAs
            if clients is None:
                raise errors.Unauthorized(N_("this gateway accepts no client certificate (it runs without "
                                             "--client-ca)"))
            return clients.agency_of(cert)
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise errors.Unauthorized(N_("send 'Authorization: Bearer <token>' or a client certificate"))
        return book.agency_of(auth[7:])

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        path = request.url.path
        declared = request.headers.get("content-length", "0")
        small = not (request.method == "POST" and path == DOCUMENTS) and not path.startswith(vxp.PREFIX)
        if small and (not declared.isdigit() or int(declared) > SMALL_BODY):
            return JSONResponse({"code": "BODY_TOO_LARGE", "message": reader(request)(
                N_("this route accepts at most {n} bytes"), n=SMALL_BODY)}, status_code=413)
        response = await call_next(request)
        route = request.scope.get("route")
        REQUESTS.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_endpoint(request: Request) -> dict[str, Any]:
        agency_of(request)
        return app.openapi()

    @app.exception_handler(errors.LienthongError)
    async def lienthong_error(request: Request, exc: errors.LienthongError) -> JSONResponse:
        status = HTTP_STATUS.get(exc.code, 422 if isinstance(exc, errors.RejectedInput) else 500)
        return JSONResponse({"code": exc.code, "message": exc.render(reader(request).gettext)}, status_code=status)

    xml_body = {"requestBody": {"required": True, "description": "The signed edXML message, as is.",
                                "content": {"application/xml": {"schema": {"type": "string"}}}}}
    status_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": list(TRANSFER_STATUSES)}}}}}}}

    @app.post("/v1/documents", status_code=202, summary="Send a signed edXML document or status",
              openapi_extra=xml_body)
    async def send(request: Request) -> dict[str, Any]:
        agency = agency_of(request)
        with gw.upload(agency):
            body = await bounded(request, gw.limit, errors.TooLarge)
            m = gw.read_own(agency, body)
            # publishing waits for the broker's confirm: do it on a worker thread, not on the event loop
            message_id = await run_in_threadpool(gw.send, agency, body, m)
        return {"message_id": message_id, "document_id": m.document_id, "kind": m.kind}

    @app.get("/v1/documents/received", summary="List received documents and statuses")
    def list_received(request: Request, transfer_status: str | None = None,
                      include_receipts: bool = False) -> list[dict[str, Any]]:
        agency = agency_of(request)
        gw.pull(agency)
        kinds = ("document", "status", "receipt") if include_receipts else ("document", "status")
        return [{"message_id": r.message_id, "kind": r.kind, "document_id": r.document_id, "from": r.sender,
                 "status_code": r.status_code or None, "received_at": r.received, "transfer_status": r.transfer}
                for r in store.received(agency, kinds=kinds, transfer=(transfer_status,) if transfer_status else None)]

    @app.get("/v1/documents/received/{message_id}", summary="Get one received message (raw edXML)",
             response_class=Response)
    def get_received(request: Request, message_id: str) -> Response:
        agency = agency_of(request)
        return Response(store.body(agency, message_id), media_type="application/xml")

    @app.put("/v1/documents/received/{message_id}/transfer-status", summary="Update a transfer status",
             openapi_extra=status_body)
    async def update_transfer(request: Request, message_id: str) -> dict[str, str]:
        agency = agency_of(request)
        try:
            status = str(json.loads(await bounded(request, SMALL_BODY, errors.BodyTooLarge))["status"])
        except (ValueError, KeyError, TypeError):
            raise errors.UsageError(N_("send JSON {example}"),
                                    example='{"status": "taken" | "done" | "failed"}') from None
        store.set_transfer(agency, message_id, status)
        return {"message_id": message_id, "transfer_status": status}

    @app.get("/v1/documents/sent", summary="List sent documents with their receipts and statuses")
    def list_sent(request: Request) -> list[dict[str, Any]]:
        agency = agency_of(request)
        gw.pull(agency)
        return [{"message_id": s.message_id, "document_id": s.document_id, "to": list(s.recipients),
                 "sent_at": s.sent,
                 "receipts": [{"kind": r.kind + (f" {r.code}" if r.code else ""), "hub": r.hub, "at": at}
                              for r, at in s.receipts],
                 "statuses": [{"code": c, "from": f, "at": at} for c, f, at in s.statuses]}
                for s in store.sent(agency)]

    @app.get("/v1/agencies", summary="The agency directory")
    def agencies(request: Request) -> list[dict[str, str]]:
        agency_of(request)
        return [{"organ_id": a.organ_id, "name": a.name, "hub": a.hub} for a in topology.agencies.values()]

    vxp.mount(app, gw, clients=clients, hmac_only=vxp_hmac_only, lang=default)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "agencyToken": {"type": "http", "scheme": "bearer",
                                "description": "issued by `lienthong gateway token AGENCY`"}}
            schema["security"] = [{"agencyToken": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
