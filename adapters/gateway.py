"""REST gateway: HTTP + JSON for document systems that do not speak AMQP.

The verbs are those DMSs already call on the national axis (send an edoc, list
and get received edocs, update a transfer status, list sent edocs with their
statuses, list agencies), under ``/v1``; the OpenAPI description is served at
``/openapi.json`` and kept in ``docs/openapi.json``.

Each request carries ``Authorization: Bearer <token>``; a token belongs to one
agency (``lienthong gateway token AGENCY`` issues one; only its SHA-256 is
kept).  An agency sees only its own documents.  Received messages are taken
from the agency's inbox into the gateway's store when the agency asks for
them, so nothing is acked on the broker before it is safely stored here.
Errors are JSON ``{"code": ..., "message": ...}`` with the codes of
docs/errors.md.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from broker.core import errors, receipts
from broker.core.edxml import read
from broker.core.parsing import DEFAULT_LIMITS, parse
from broker.core.topology import Topology
from broker.settings import Settings

from .localdb import LocalDB
from .sdk import AgencyClient, InboxItem

TRANSFER_STATUSES = ("new", "taken", "done")
REQUESTS = Counter("lienthong_gateway_requests_total", "Gateway requests by route and status", ["route", "status"])
HTTP_STATUS = {"USAGE": 400, "UNAUTHORIZED": 401, "ACCESS_REFUSED": 403, "SENDER_NOT_ALLOWED": 403,
               "NOT_FOUND": 404, "XML_TOO_LARGE": 413, "TRANSIENT": 503}


# --- tokens -------------------------------------------------------------------------------


def tokens_path(settings: Settings) -> Path:
    return settings.data_dir / "gateway-tokens.yaml"


def issue_token(settings: Settings, agency: str) -> str:
    """A new bearer token for ``agency``; only its SHA-256 is stored."""
    Topology.load(settings.topology).agency(agency)
    path = tokens_path(settings)
    known = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    token = secrets.token_urlsafe(32)
    known = dict(known or {})
    known[hashlib.sha256(token.encode()).hexdigest()] = agency
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(known), encoding="utf-8")
    path.chmod(0o600)
    return token


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
               max_bytes: int | None = None) -> FastAPI:
    """The gateway over ``settings``' topology and data directory; ``connect(agency)`` opens that
    agency's own client (its broker account, its handed-over store)."""
    topology = Topology.load(settings.topology)
    limit = max_bytes or int(topology.settings.get("max_bytes", DEFAULT_LIMITS.max_bytes))
    store = GatewayStore(settings.data_dir / "gateway.sqlite3")
    clients: dict[str, AgencyClient] = {}
    clients_lock = threading.Lock()
    app = FastAPI(title="lienthong gateway", version="1",
                  description="Send and receive edXML documents through the lienthong relay.")

    def client(agency: str) -> AgencyClient:
        """One client per agency and thread: pika connections must not be shared between threads."""
        key = f"{threading.get_ident()}:{agency}"
        with clients_lock:
            if key not in clients:
                clients[key] = connect(agency)
            return clients[key]

    token_cache: dict[str, Any] = {"mtime": None, "known": {}}

    def known_tokens() -> dict[str, str]:
        """Token hashes -> agency, re-read when the file changes (a new token works at once)."""
        path = tokens_path(settings)
        mtime = path.stat().st_mtime_ns if path.exists() else None
        if mtime != token_cache["mtime"]:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if mtime is not None else {}
            token_cache.update(mtime=mtime, known=dict(loaded or {}))
        return token_cache["known"]  # type: ignore[no-any-return]

    def agency_of(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise errors.Unauthorized("send 'Authorization: Bearer <token>'")
        agency = known_tokens().get(hashlib.sha256(auth[7:].strip().encode()).hexdigest())
        if agency is None:
            raise errors.Unauthorized("the token is not valid")
        return str(agency)

    def pull(agency: str) -> None:
        """Take what waits in the agency's inbox into the gateway store (acked once stored)."""
        client(agency).fetch(lambda item: store.add_received(agency, item), limit=500)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        REQUESTS.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

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
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise errors.TooLarge(f"message is {declared} bytes; the limit is {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():  # streamed: never more than the limit in memory
            size += len(chunk)
            if size > limit:
                raise errors.TooLarge(f"message exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
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
            status = str((await request.json())["status"])
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
