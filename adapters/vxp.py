"""The national axis' client protocol (VXP), so a document system switches by changing one URL.

``POST /vxp/<operation>`` with the call's parameters in ``XroadVnpt-`` headers.  A request is bound
to a key: it comes over mutual TLS with a client certificate of the agency that ``systemid``
names (not revoked, pinned where the directory pins: :mod:`adapters.clientcerts`), and its signed
headers check out as :mod:`adapters.vxpauth` describes.  The SDK signs only some headers (never
``docId`` or ``status``), so without the certificate a header pair captured from any call would
serve as a bearer token for other calls until its timestamp expires.  The gateway's
``--vxp-hmac-only`` accepts requests without a certificate, with a window of at most
:data:`HMAC_ONLY_WINDOW` and a warning at start.

Every answer is JSON ``{"status": "OK"|"FAIL", "ErrorCode": "0"|..., "ErrorDesc": ..., "data":
...}``, ASCII only (some read the answer as US-ASCII), with HTTP 200 (the clients read the
envelope), except a refused authentication: HTTP 401, the same envelope.

Underneath it is the gateway (:mod:`adapters.gateway`): a message sent here goes to the agency's
hub with the agency's own broker account and is judged at every hop like any other; ``docId`` is
lienthong's message id (SHA-256 of the signed bytes); the received list is the agency's mailbox,
and ``updateStatus`` moves a message through it (``processing``, then ``done``: taken out, or
``fail``: offered again).  ``ErrorCode`` is lienthong's error code as a number
(:data:`ERROR_CODES`, listed in docs/errors.md), and ``ErrorDesc`` is ``CODE: sentence``, the
sentence in the language the request's ``Accept-Language`` prefers, else the gateway's: Vietnamese
unless its operator chose English (the vendor's SDK sends no ``Accept-Language``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from broker import i18n
from broker.core import errors
from broker.core.edxml import STATUS_CODES
from broker.i18n import N_
from broker.logs import get_logger
from broker.settings import Settings

from .clientcerts import ClientCertificates
from .https import client_certificate
from .mailbox import PENDING, ReceivedItem, Sent
from .serving import Gateway, bounded
from .vxpauth import Authenticated, SecretBook, authenticate, hash_file, zone_of

PREFIX = "/vxp"
SMALL_BODY = 64 * 1024
HMAC_ONLY_WINDOW = 300.0
"""The most a request's timestamp may be off without mutual TLS (``--vxp-hmac-only``)."""
DATE = "%d/%m/%Y %H:%M:%S"
log = get_logger("lienthong.vxp")

ERROR_CODES = {
    # the request
    "USAGE": "100", "UNAUTHORIZED": "101", "REQUEST_STALE": "102", "REQUEST_REPLAYED": "103",
    "HEADER_MISMATCH": "104", "HASH_MISMATCH": "105", "OPERATION_UNKNOWN": "106", "BODY_TOO_LARGE": "107",
    "TOO_MANY_UPLOADS": "108", "NOT_FOUND": "109", "HOST_NOT_ALLOWED": "110",
    # the message (the same refusals a hub makes)
    "INPUT_REJECTED": "200", "XML_MALFORMED": "201", "XML_FORBIDDEN": "202", "XML_TOO_LARGE": "203",
    "XML_TOO_DEEP": "204", "EDXML_NAMESPACE": "205", "EDXML_SCHEMA": "206", "EDXML_MANIFEST": "207",
    "SIG_INVALID": "210", "SIG_MISSING": "211", "SIG_PROFILE": "212", "SIG_ALGORITHM": "213", "SIG_DIGEST": "214",
    "CERT_INVALID": "220", "CERT_UNTRUSTED": "221", "CERT_EXPIRED": "222", "CERT_REVOKED": "223",
    "CRL_UNAVAILABLE": "224", "CERT_USAGE": "225", "CERT_ALGORITHM": "226",
    "SIGNER_MISMATCH": "230", "AGENCY_UNKNOWN": "231", "RECIPIENT_UNKNOWN": "232", "SENDER_NOT_ALLOWED": "233",
    "DOCUMENT_ID_REUSED": "234", "TRACE_INVALID": "235", "STATUS_REUSED": "236", "HUB_REVOKED": "237",
    # the service
    "TRANSIENT": "300", "ACCESS_REFUSED": "301", "CONFIG": "302", "RETRY_EXHAUSTED": "303", "AUDIT_BROKEN": "304",
    "AUDIT_INCOMPLETE": "305",
    # the network's directory (between hubs; listed so that every code has its number)
    "DIRECTORY_REFUSED": "310", "DIRECTORY_SIGNATURE": "311", "DIRECTORY_SIGNER": "312", "DIRECTORY_STALE": "313",
    "DIRECTORY_INVALID": "314", "DIRECTORY_TOO_LARGE": "315",
    "INTERNAL": "399",
}
"""lienthong's error code -> the protocol's ``ErrorCode`` ("0" is success).  Stable, like the codes."""

TRANSFER = {"processing": "taken", "done": "done", "fail": "failed"}
"""``updateStatus`` values -> the mailbox's transfer statuses."""
STATUS_OF = {"new": ("initial", "waiting to be taken"), "taken": ("processing", "taken, being processed"),
             "done": ("done", "taken"), "failed": ("fail", "the document system could not take it; offered again")}


def error_code(exc: errors.LienthongError) -> str:
    """The protocol's ``ErrorCode`` for a lienthong error: its own, or its family's."""
    return ERROR_CODES.get(exc.code) or ("200" if isinstance(exc, errors.RejectedInput) else "399")


def answer(data: Any = None, **extra: Any) -> Response:
    body = {"status": "OK", "ErrorCode": "0", "ErrorDesc": "", **extra}
    if data is not None:
        body["data"] = data
    return Response(json.dumps(body, ensure_ascii=True), media_type="application/json")


def failure(exc: errors.LienthongError, gettext: Callable[[str], str] | None = None) -> Response:
    """The refusal's answer: its code as a number, ``CODE: sentence`` with the sentence through
    ``gettext`` (a catalogue's; English without); non-ASCII letters escaped in the JSON."""
    desc = f"{exc.code}: {exc.render(gettext)}"
    return Response(json.dumps({"status": "FAIL", "ErrorCode": error_code(exc), "ErrorDesc": desc},
                               ensure_ascii=True), media_type="application/json",
                    status_code=401 if isinstance(exc, errors.Unauthorized) else 200)


def mount(app: FastAPI, gw: Gateway, *, clients: ClientCertificates | None, hmac_only: bool = False,
          lang: str = i18n.DEFAULT) -> None:
    """Serve the protocol on ``app`` under ``/vxp``, over the gateway ``gw``: requests come with a
    client certificate ``clients`` accepts, or, with ``hmac_only``, may come without one.  Refusals
    are in the language of a request's ``Accept-Language``, else in ``lang``."""
    settings = gw.topology.settings
    window = settings.vxp.window_seconds
    if hmac_only:
        window = min(window, HMAC_ONLY_WINDOW)
        log.warning("the axis protocol accepts requests without a client certificate (--vxp-hmac-only): a "
                    "header pair captured from one call serves any call of that agency for its window",
                    window_seconds=window)
    zone = zone_of(settings.vxp.utc_offset or settings.report.utc_offset)
    book = secret_book(gw.settings)
    mailbox = gw.mailbox
    ids = {code: str(i) for i, code in enumerate(gw.topology.agencies, start=1)}

    def when(ts: float) -> str:
        return datetime.fromtimestamp(ts, zone).strftime(DATE)

    def period(req: Authenticated) -> tuple[float | None, float | None]:
        out: list[float | None] = []
        for key in ("fromdate", "todate"):
            text = req.get(key).strip()
            try:
                out.append(datetime.strptime(text, DATE).replace(tzinfo=zone).timestamp() if text else None)
            except ValueError:
                raise errors.UsageError(N_("{key} {text!r} is not dd/MM/yyyy HH:mm:ss"), key=key, text=text) from None
        return out[0], out[1]

    def kind_of(req: Authenticated) -> str:
        kind = (req.get("messagetype") or "edoc").strip().lower()
        if kind not in ("edoc", "status"):
            raise errors.UsageError(N_("messagetype must be edoc or status, not {kind!r}"), kind=kind)
        return "document" if kind == "edoc" else "status"

    # -- the operations ----------------------------------------------------------------------

    async def send_edoc(req: Authenticated, body: bytes) -> Response:
        expected = req.require("hash-file").lower()
        signed = body
        if hash_file(body) != expected:  # the SDK writes a CRLF after the file: it is not part of it
            if body.endswith(b"\r\n") and hash_file(body[:-2]) == expected:
                signed = body[:-2]
            else:
                raise errors.HashMismatch(N_("the body's SHA-256 is not the hash-file sent with it"))
        m = gw.read_own(req.agency, signed)
        if m.kind != kind_of(req):
            raise errors.UsageError(N_("messagetype says {said}, the message is a {kind}"),
                                    said=req.get('messagetype') or 'edoc', kind=m.kind)
        sender = req.get("from").strip()
        if sender and sender != m.sender.organ_id:
            raise errors.HeaderMismatch(N_("the from header names {sender!r}, the signed message {agency!r}"),
                                        sender=sender, agency=m.sender.organ_id)
        to = _codes(req.get("to"))
        if to is not None and set(to) != set(m.recipient_ids):
            raise errors.HeaderMismatch(N_("the to header names {header}, the signed message {signed}"),
                                        header=sorted(to), signed=sorted(m.recipient_ids))
        with gw.upload(req.agency):
            doc_id = await run_in_threadpool(gw.send, req.agency, signed, m)
        return answer({"DocId": doc_id}, DocId=doc_id)

    def received_list(req: Authenticated, _body: bytes) -> Response:
        gw.pull(req.agency)
        since, until = period(req)
        kind = kind_of(req)
        return answer([_received_item(r, req.agency, when) for r in
                       mailbox.received(req.agency, kinds=(kind,), transfer=PENDING, since=since, until=until)])

    def get_edoc(req: Authenticated, _body: bytes) -> Response:
        doc_id = req.require("docid")
        try:
            data = mailbox.body(req.agency, doc_id)
        except errors.NotFound:
            gw.pull(req.agency)  # it may still wait in the broker inbox
            data = mailbox.body(req.agency, doc_id)
        return answer(base64.b64encode(data).decode())

    def update_status(req: Authenticated, _body: bytes) -> Response:
        doc_id, status = req.require("docid"), req.require("status").lower()
        if status not in TRANSFER:
            raise errors.UsageError(N_("status must be one of {statuses}, not {status!r}"),
                                    statuses=', '.join(TRANSFER), status=status)
        mailbox.set_transfer(req.agency, doc_id, TRANSFER[status])
        return answer()

    def sent_list(req: Authenticated, _body: bytes) -> Response:
        gw.pull(req.agency)  # the receipts and statuses waiting in the inbox
        since, until = period(req)
        rows = [s for s in mailbox.sent(req.agency, kind_of(req))
                if (since is None or s.sent >= since) and (until is None or s.sent < until)]
        return answer([item for s in rows for item in _sent_items(s, req.agency, when)])

    def agencies(_req: Authenticated, _body: bytes) -> Response:
        return answer([{"id": ids[a.organ_id], "code": a.organ_id, "name": a.name, "mail": a.mail,
                        "pid": ids.get(a.parent, "0"), "oldCode": a.old_code} for a in gw.topology.agencies.values()])

    def counter(kind: str) -> Callable[[Authenticated, bytes], Response]:
        def count(req: Authenticated, _body: bytes) -> Response:
            gw.pull(req.agency)
            n = mailbox.count(req.agency, kind)
            return answer({"count": n}, count=n)
        return count

    blocking: dict[str, Callable[[Authenticated, bytes], Response]] = {
        "getReceivedEdocList": received_list, "getEdoc": get_edoc, "updateStatus": update_status,
        "getSentEdocList": sent_list, "getAgenciesList": agencies,
        "countReceiveEdoc": counter("document"), "countReceiveStatus": counter("status")}

    def caller(request: Request) -> str | None:
        """The agency of the request's client certificate; None when HMAC alone may do."""
        cert = client_certificate(request.scope)
        if cert is not None:
            if clients is None:
                raise errors.Unauthorized(N_("this gateway accepts no client certificate (it runs without "
                                             "--client-ca)"))
            return clients.agency_of(cert)
        if hmac_only:
            return None
        raise errors.Unauthorized(N_("the axis protocol needs mutual TLS here: present your agency's client "
                                     "certificate (see 'Switching from the national axis' in the README)"))

    @app.post(PREFIX + "/{operation}", include_in_schema=False)
    async def serve(request: Request, operation: str) -> Response:
        try:
            if operation != "sendEdoc" and operation not in blocking:
                raise errors.UnknownOperation(N_("the protocol has no operation {operation!r}"), operation=operation)
            bound = caller(request)
            raw = {k.decode("latin-1").lower(): v for k, v in request.headers.raw}
            req = authenticate(raw, book=book, agencies=gw.topology.agencies, now=datetime.now(UTC),
                               window=window, zone=zone)
            if bound is not None and bound != req.agency:
                raise errors.Unauthorized(N_("the client certificate is agency {bound}'s, systemid names {agency}"),
                                          bound=bound, agency=req.agency)
            limit = gw.limit + 2 if operation == "sendEdoc" else SMALL_BODY
            body = await bounded(request, limit, errors.TooLarge if operation == "sendEdoc" else errors.BodyTooLarge,
                                 drain=2 * limit)  # the SDK sends its whole body before it reads
            if not mailbox.first_use(req.replay_key(operation, body), keep_seconds=2 * window + 60):
                raise errors.RequestReplayed(N_("this exact signed request was already served"))
            if operation == "sendEdoc":
                return await send_edoc(req, body)
            return await run_in_threadpool(blocking[operation], req, body)
        except errors.LienthongError as exc:
            return failure(exc, i18n.catalogue(i18n.negotiate(request.headers.get("accept-language"), lang)).gettext)


def markdown() -> str:
    """The ``ErrorCode`` table of docs/errors.md."""
    lines = ["## ErrorCode in the national axis protocol (`/vxp`)", "",
             "A call answered with `\"status\": \"FAIL\"` carries `ErrorCode` (below) and `ErrorDesc`",
             "(`CODE: sentence`, the sentence in the language of the request's `Accept-Language`, else",
             "the gateway's: Vietnamese unless it runs with `--lang en`); success is `\"0\"`. A code not",
             "listed maps to its family: 200 for a refused message, 399 otherwise.", "", "| code | ErrorCode |",
             "|---|---|"]
    lines += [f"| `{code}` | {number} |" for code, number in sorted(ERROR_CODES.items(), key=lambda kv: int(kv[1]))]
    return "\n".join(lines) + "\n"


def secret_book(settings: Settings) -> SecretBook:
    """The agencies' secrets for this protocol: ``<data>/vxp-secrets/<code>.secret``."""
    return SecretBook(settings.data_dir / "vxp-secrets")


def _codes(text: str) -> list[str] | None:
    """The ``to`` header: a JSON array of agency codes, as a string (absent: None)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise errors.UsageError(N_("the to header is not a JSON array")) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.UsageError(N_("the to header must be a JSON array of agency codes"))
    return value


def _received_item(r: ReceivedItem, agency: str, when: Callable[[float], str]) -> dict[str, str]:
    status, desc = STATUS_OF[r.transfer]
    return {"docId": r.message_id, "serviceType": "eDoc", "messageType": "edoc" if r.kind == "document" else "status",
            "created_time": when(r.received), "updated_time": when(r.updated), "from": r.sender, "to": agency,
            "status": status, "status_desc": desc}


def _sent_items(s: Sent, agency: str, when: Callable[[float], str]) -> list[dict[str, str]]:
    """One row per recipient: where the message is (hub receipts), what the recipient answered
    (its latest business status)."""
    rejected = next((r for r, _ in s.receipts if r.kind == "rejected"), None)
    accepted = next(((r, at) for r, at in s.receipts if r.kind == "accepted"), None)
    out = []
    for to in s.recipients or ("",):
        delivered = next(((r, at) for r, at in s.receipts if r.kind == "delivered" and to in r.recipients), None)
        if rejected is not None:
            send, desc = "rejected", f"{rejected.code}: {rejected.reason} (hub {rejected.hub})"
        elif delivered is not None:
            send, desc = "delivered", f"in the recipient's inbox (hub {delivered[0].hub}, {delivered[0].time})"
        elif accepted is not None:
            send, desc = "accepted", f"accepted by hub {accepted[0].hub}, on its way"
        else:
            send, desc = "sent", "handed to the relay; no receipt yet"
        answers = [(code, at) for code, sender, at in s.statuses if sender == to]
        code = answers[-1][0] if answers else ""
        out.append({"senderDocId": s.message_id, "receiverDocId": s.message_id, "fromCode": agency, "toCode": to,
                    "sendStatus": send, "sendStatusDesc": desc, "receiveStatus": code,
                    "receiveStatusDesc": STATUS_CODES.get(code, ""), "title": s.title, "notation": s.notation,
                    "sentTime": when(s.sent), "receivedTime": when(delivered[1]) if delivered else "",
                    "serviceType": "eDoc", "messageType": "edoc" if s.kind == "document" else "status"})
    return out
