"""REST gateway: HTTP + JSON for document systems that do not speak AMQP.

The verbs are those DMSs already call on the national axis (send an edoc, list
and get received edocs, update a transfer status, list sent edocs with their
statuses, list agencies), under ``/v1``; the OpenAPI description is served at
``/openapi.json`` and kept in ``docs/openapi.json``.

Each request carries ``Authorization: Bearer <token>`` (a token belongs to one agency and
expires; ``lienthong gateway token issue|rotate|revoke|list``, see :mod:`adapters.tokens`), or,
over mutual TLS, a client certificate whose subject UID is the agency's code.  An agency sees
only its own documents.  Bodies are bounded on every route (the message limit on
``POST /v1/documents``, :data:`SMALL_BODY` elsewhere) and each agency has at most
``max_uploads`` uploads in progress.  ``/openapi.json`` needs a token; there is no ``/docs`` page
(it would load scripts from elsewhere) and no ``/metrics`` here (``gateway run --metrics-port``
serves them on loopback).  Received messages are taken
from the agency's inbox into the gateway's store when the agency asks for
them, so nothing is acked on the broker before it is safely stored here.
Errors are JSON ``{"code": ..., "message": ...}`` with the codes of
docs/errors.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter

from broker.core import errors, receipts
from broker.core.edxml import read
from broker.core.parsing import DEFAULT_LIMITS, parse
from broker.core.topology import Topology, subject_uid
from broker.settings import Settings

from .https import client_certificate
from .localdb import LocalDB
from .sdk import AgencyClient, InboxItem
from .tokens import DEFAULT_DAYS, TokenBook

TRANSFER_STATUSES = ("new", "taken", "done")
REQUESTS = Counter("lienthong_gateway_requests_total", "Gateway requests by route and status", ["route", "status"])
HTTP_STATUS = {"USAGE": 400, "UNAUTHORIZED": 401, "ACCESS_REFUSED": 403, "SENDER_NOT_ALLOWED": 403,
               "NOT_FOUND": 404, "XML_TOO_LARGE": 413, "BODY_TOO_LARGE": 413, "TOO_MANY_UPLOADS": 429,
               "TRANSIENT": 503}
SMALL_BODY = 64 * 1024
"""The body limit of every route but ``POST /v1/documents``."""
DOCUMENTS = "/v1/documents"


# --- tokens -------------------------------------------------------------------------------


def tokens(settings: Settings) -> TokenBook:
    return TokenBook(settings.data_dir / "gateway-tokens.yaml")


def issue_token(settings: Settings, agency: str, days: float = DEFAULT_DAYS) -> str:
    """A new bearer token for ``agency`` (which must be in the directory), valid ``days``."""
    Topology.load(settings.topology).agency(agency)
    return tokens(settings).issue(agency, days)[1]


# --- the gateway's own store ---------------------------------------------------------------


class GatewayStore:
    """Received and sent messages per agency (SQLite beside the data directory)."""

    def __init__(self, path: Path) -> None:
        self._db = LocalDB(path, [
            """CREATE TABLE IF NOT EXISTS received (agency TEXT, message_id TEXT, kind TEXT,
                document_id TEXT, sender TEXT, status_code TEXT, about TEXT, received REAL, transfer TEXT,
                body BLOB, PRIMARY KEY (agency, message_id))""",
            """CREATE TABLE IF NOT EXISTS sent (agency TEXT, message_id TEXT, document_id TEXT,
                recipients TEXT, sent REAL, PRIMARY KEY (agency, message_id))"""])

    def add_received(self, agency: str, item: InboxItem) -> None:
        kind, document_id, sender, code, about = item.kind, "", "", "", ""
        if item.kind == "receipt":
            r = receipts.read_bytes(item.body)
            document_id, sender, code, about = r.document_id, r.hub, r.kind + (f" {r.code}" if r.code else ""), \
                r.document_sha256
        else:
            m = read(parse(item.body))
            kind, document_id, sender, code = m.kind, m.document_id, m.sender.organ_id, m.status_code or ""
        with self._db.tx() as db:
            db.execute("INSERT OR IGNORE INTO received VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (agency, item.message_id, kind, document_id, sender, code, about, time.time(), "new",
                              item.body))

    def received(self, agency: str, *, transfer: str | None, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        sql = ("SELECT message_id, kind, document_id, sender, status_code, received, transfer FROM received "
               f"WHERE agency = ? AND kind IN ({','.join('?' * len(kinds))})")
        args: list[Any] = [agency, *kinds]
        if transfer:
            sql += " AND transfer = ?"
            args.append(transfer)
        rows = self._db.rows(sql + " ORDER BY received", args)
        return [{"message_id": r[0], "kind": r[1], "document_id": r[2], "from": r[3], "status_code": r[4] or None,
                 "received_at": r[5], "transfer_status": r[6]} for r in rows]

    def body(self, agency: str, message_id: str) -> bytes:
        rows = self._db.rows("SELECT body FROM received WHERE agency = ? AND message_id = ?", (agency, message_id))
        if not rows:
            raise errors.NotFound(f"no received message {message_id!r} for agency {agency!r}")
        return bytes(rows[0][0])

    def set_transfer(self, agency: str, message_id: str, status: str) -> None:
        with self._db.tx() as db:
            cur = db.execute("UPDATE received SET transfer = ? WHERE agency = ? AND message_id = ?",
                             (status, agency, message_id))
        if cur.rowcount == 0:
            raise errors.NotFound(f"no received message {message_id!r} for agency {agency!r}")

    def add_sent(self, agency: str, message_id: str, document_id: str, recipients: tuple[str, ...]) -> None:
        with self._db.tx() as db:
            db.execute("INSERT OR IGNORE INTO sent VALUES (?,?,?,?,?)",
                             (agency, message_id, document_id, json.dumps(recipients), time.time()))

    def sent(self, agency: str) -> list[dict[str, Any]]:
        rows = self._db.rows("SELECT message_id, document_id, recipients, sent FROM sent WHERE agency = ? "
                             "ORDER BY sent", (agency,))
        out = []
        for mid, doc_id, recips, at in rows:
            rec = self._db.rows("SELECT status_code, sender, received FROM received WHERE agency = ? AND "
                                "kind = 'receipt' AND about = ? ORDER BY received", (agency, mid))
            sts = self._db.rows("SELECT status_code, sender, received FROM received WHERE agency = ? AND "
                                "kind = 'status' AND document_id = ? ORDER BY received", (agency, doc_id))
            out.append({"message_id": mid, "document_id": doc_id, "to": json.loads(recips), "sent_at": at,
                        "receipts": [{"kind": r[0], "hub": r[1], "at": r[2]} for r in rec],
                        "statuses": [{"code": s[0], "from": s[1], "at": s[2]} for s in sts]})
        return out


# --- the application ---------------------------------------------------------------------


def create_app(settings: Settings, *, connect: Callable[[str], AgencyClient],
               max_bytes: int | None = None, max_uploads: int = 4) -> FastAPI:
    """The gateway over ``settings``' topology and data directory; ``connect(agency)`` opens that
    agency's own client (its broker account, its handed-over store)."""
    topology = Topology.load(settings.topology)
    limit = max_bytes or int(topology.settings.get("max_bytes", DEFAULT_LIMITS.max_bytes))
    store = GatewayStore(settings.data_dir / "gateway.sqlite3")
    clients: dict[str, AgencyClient] = {}
    clients_lock = threading.Lock()
    app = FastAPI(title="lienthong gateway", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Send and receive edXML documents through the lienthong relay.")
    book = tokens(settings)
    uploads: dict[str, int] = {}

    def client(agency: str) -> AgencyClient:
        """One client per agency and thread: pika connections must not be shared between threads."""
        key = f"{threading.get_ident()}:{agency}"
        with clients_lock:
            if key not in clients:
                clients[key] = connect(agency)
            return clients[key]

    def agency_of(request: Request) -> str:
        cert = client_certificate(request.scope)
        if cert is not None:  # verified by the TLS handshake against the gateway's client CA
            agency = subject_uid(cert)
            if agency not in topology.agencies:
                raise errors.Unauthorized(f"the client certificate names {agency!r}, not an agency of the directory")
            return str(agency)
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise errors.Unauthorized("send 'Authorization: Bearer <token>' or a client certificate")
        return book.agency_of(auth[7:])

    def pull(agency: str) -> None:
        """Take what waits in the agency's inbox into the gateway store (acked once stored)."""
        client(agency).fetch(lambda item: store.add_received(agency, item), limit=500)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        declared = request.headers.get("content-length", "0")
        small = not (request.method == "POST" and request.url.path == DOCUMENTS)
        if small and (not declared.isdigit() or int(declared) > SMALL_BODY):
            return JSONResponse({"code": "BODY_TOO_LARGE", "message": f"this route accepts at most "
                                 f"{SMALL_BODY} bytes"}, status_code=413)
        response = await call_next(request)
        route = request.scope.get("route")
        REQUESTS.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_endpoint(request: Request) -> dict[str, Any]:
        agency_of(request)
        return app.openapi()

    @app.exception_handler(errors.LienthongError)
    async def lienthong_error(_request: Request, exc: errors.LienthongError) -> JSONResponse:
        status = HTTP_STATUS.get(exc.code, 422 if isinstance(exc, errors.RejectedInput) else 500)
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=status)

    xml_body = {"requestBody": {"required": True, "description": "The signed edXML message, as is.",
                                "content": {"application/xml": {"schema": {"type": "string"}}}}}
    status_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": list(TRANSFER_STATUSES)}}}}}}}

    @app.post("/v1/documents", status_code=202, summary="Send a signed edXML document or status",
              openapi_extra=xml_body)
    async def send(request: Request) -> dict[str, Any]:
        agency = agency_of(request)
        if uploads.get(agency, 0) >= max_uploads:  # one event loop: no lock needed around the count
            raise errors.TooManyUploads(f"{agency} already has {max_uploads} uploads in progress; retry shortly")
        uploads[agency] = uploads.get(agency, 0) + 1
        try:
            return await _send(request, agency)
        finally:
            uploads[agency] -= 1

    async def _send(request: Request, agency: str) -> dict[str, Any]:
        body = await bounded(request, limit, errors.TooLarge)
        m = read(parse(body))  # early, clear feedback; the hubs do the full checks
        if m.sender.organ_id != agency:
            raise errors.SenderNotAllowed(f"this token belongs to {agency!r}, the message is from "
                                          f"{m.sender.organ_id!r}")
        # publishing waits for the broker's confirm: do it on a worker thread, not on the event loop
        message_id = await run_in_threadpool(lambda: client(agency).send(body))
        if m.kind == "document":
            store.add_sent(agency, message_id, m.document_id, m.recipient_ids)
        return {"message_id": message_id, "document_id": m.document_id, "kind": m.kind}

    @app.get("/v1/documents/received", summary="List received documents and statuses")
    def list_received(request: Request, transfer_status: str | None = None,
                      include_receipts: bool = False) -> list[dict[str, Any]]:
        agency = agency_of(request)
        pull(agency)
        kinds = ("document", "status", "receipt") if include_receipts else ("document", "status")
        return store.received(agency, transfer=transfer_status, kinds=kinds)

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
            raise errors.UsageError('send JSON {"status": "taken" | "done"}') from None
        if status not in TRANSFER_STATUSES:
            raise errors.UsageError(f"status must be one of {', '.join(TRANSFER_STATUSES)}")
        store.set_transfer(agency, message_id, status)
        return {"message_id": message_id, "transfer_status": status}

    @app.get("/v1/documents/sent", summary="List sent documents with their receipts and statuses")
    def list_sent(request: Request) -> list[dict[str, Any]]:
        agency = agency_of(request)
        pull(agency)
        return store.sent(agency)

    @app.get("/v1/agencies", summary="The agency directory")
    def agencies(request: Request) -> list[dict[str, str]]:
        agency_of(request)
        return [{"organ_id": a.organ_id, "name": a.name, "hub": a.hub} for a in topology.agencies.values()]

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


async def bounded(request: Request, limit: int, too_large: type[errors.LienthongError]) -> bytes:
    """The request body, read as it streams and refused as soon as it passes ``limit`` bytes."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise too_large(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # never more than the limit in memory
        size += len(chunk)
        if size > limit:
            raise too_large(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
