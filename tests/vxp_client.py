"""A client of the national axis protocol written from its facts (shared/interop/vxp-protocol.md),
not from the vendor's SDK: what a document system sends when it talks to ``<endpoint>/<operation>``.

It behaves as the SDK does where the facts say so: the timestamp is fixed when the client is
made, the header map is reused from call to call (so keys of an earlier call stay in it and in
the signed set), the body of ``sendEdoc`` is the file followed by CRLF, and ``hash-file`` is
SHA-256 in hex without zero padding of each byte.  Over mutual TLS it presents the client
certificate of its ``context`` (:func:`tls_context`), as the SDK does with the JVM's standard
key-store properties; it reads the answer's JSON whatever the HTTP status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

VIETNAM = timezone(timedelta(hours=7))
SIGNED = ("systemid", "servicetype", "messagetype", "timestamp", "Content-Type")
"""The keys the SDK signs by default."""


def sdk_hash(data: bytes) -> str:
    return "".join(f"{b:x}" for b in hashlib.sha256(data).digest())


def tls_context(server_ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Trust the gateway's CA; present ``cert`` (and its ``key``) when asked for a client certificate."""
    ctx = ssl.create_default_context(cafile=str(server_ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


class VxpClient:
    def __init__(self, endpoint: str, systemid: str, secret: str, *, context: ssl.SSLContext | None = None,
                 when: datetime | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.systemid = systemid
        self.secret = secret
        self.context = context
        at = (when or datetime.now(VIETNAM)).astimezone(VIETNAM)
        self.headers: dict[str, str] = {  # kept from call to call, as the SDK keeps its map
            "systemid": systemid,
            "timestamp": at.strftime("%d%m%YT%H%M%S") + f"+{at.microsecond // 1000:04d}",
            "Content-Type": "application/json",
            "version": "3.0.201608",
            "servicetype": "eDoc",
            "messagetype": "edoc",
        }
        self.signed: tuple[str, ...] = SIGNED
        self.last_request: tuple[str, dict[str, str], bytes] | None = None
        self.last_status = 0
        """The HTTP status of the last answer."""

    # -- the wire ------------------------------------------------------------------------------

    def prepare(self, operation: str, body: bytes, **params: str) -> tuple[str, dict[str, str], bytes]:
        self.headers.update(params)
        sign_header = json.dumps({f"XroadVnpt-{k}": self.headers[k] for k in self.signed if k in self.headers})
        wire = {f"XroadVnpt-{k}": v for k, v in self.headers.items()}
        wire["XroadVnpt-sign-header-key"] = ";".join(self.signed)
        wire["XroadVnpt-sign-header"] = sign_header
        wire["XroadVnpt-hash-header"] = hmac.new(self.secret.encode(), sign_header.encode(),
                                                 hashlib.sha256).hexdigest()
        wire["Content-Type"] = "application/octet-stream" if operation == "sendEdoc" else "application/json"
        return f"{self.endpoint}/{operation}", wire, body

    def post(self, url: str, headers: dict[str, str], body: bytes | Iterator[bytes]) -> dict[str, Any]:
        if isinstance(body, bytes):
            self.last_request = (url, dict(headers), body)
        req = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.context) as resp:
                self.last_status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # the envelope comes with a refusal too
            self.last_status, raw = exc.code, exc.read()
        return dict(json.loads(raw.decode("ascii")))

    def call(self, operation: str, body: bytes = b"", **params: str) -> dict[str, Any]:
        return self.post(*self.prepare(operation, body, **params))

    def replay(self) -> dict[str, Any]:
        """Send the last request again, byte for byte."""
        assert self.last_request is not None
        return self.post(*self.last_request)

    # -- the operations --------------------------------------------------------------------------

    def send_edoc(self, data: bytes, *, messagetype: str = "edoc", to: list[str] | None = None,
                  hash_file: str | None = None) -> dict[str, Any]:
        params = {"from": self.systemid, "messagetype": messagetype, "hash-file": hash_file or sdk_hash(data),
                  "Content-Type": "application/octet-stream"}
        if to is not None:
            params["to"] = json.dumps(to)
        return self.call("sendEdoc", data + b"\r\n", **params)

    def received(self, messagetype: str = "edoc") -> dict[str, Any]:
        return self.call("getReceivedEdocList", messagetype=messagetype, **{"Content-Type": "application/json"})

    def get_edoc(self, doc_id: str) -> dict[str, Any]:
        return self.call("getEdoc", b"{}", docId=doc_id, filePath="/tmp/edoc")

    def get_edoc_bytes(self, doc_id: str) -> bytes:
        answer = self.get_edoc(doc_id)
        assert answer["ErrorCode"] == "0", answer
        return base64.b64decode(answer["data"])

    def update_status(self, doc_id: str, status: str) -> dict[str, Any]:
        return self.call("updateStatus", b"{}", docid=doc_id, status=status)

    def sent(self, messagetype: str = "edoc") -> dict[str, Any]:
        return self.call("getSentEdocList", messagetype=messagetype)

    def agencies(self) -> dict[str, Any]:
        return self.call("getAgenciesList", b"{}")

    def count(self, what: str = "Edoc") -> dict[str, Any]:
        return self.call(f"countReceive{what}", b"{}")
