"""The REST gateway's and the dashboard's doors, against the real broker and real HTTPS servers:
mutual TLS (revocation and pins checked), tokens that expire and can be revoked or rotated, body
and upload limits, nothing served without credentials."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from adapters.gateway import create_app, issue_token, tokens
from adapters.https import server_options
from adapters.vxp import secret_book
from broker.core.trust import fingerprint
from broker.ops.dashboard import create_app as dashboard_app
from broker.relay import devpki
from broker.settings import Settings
from tests.relay import Relay, serve
from tests.vxp_client import VxpClient

pytestmark = pytest.mark.broker

A, B = "000.00.51.H41", "001.00.31.H14"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA for the gateway: its server certificate; agency A's client certificate, a second one
    of A, one of A that the CA revoked, and one for A from another CA; ``clients``, the client CA's
    trust store directory (its certificate and CRL)."""
    d = tmp_path_factory.mktemp("gateway-tls")
    ca, stranger = devpki.make_root("gateway CA"), devpki.make_root("a stranger's CA")
    (d / "ca.pem").write_bytes(devpki.pem_cert(ca.cert))
    devpki.write_pair((d / "server.key", d / "server.pem"), devpki.issue_server(ca, ["localhost", "127.0.0.1"]))
    issued = {}
    for name, issuer in (("a", ca), ("forged", stranger), ("second", ca), ("revoked", ca)):
        issued[name] = devpki.issue(issuer, "DMS of A", uid=A, kind="ec", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        devpki.write_pair((d / f"{name}.key", d / f"{name}.pem"), issued[name])
    (d / "clients").mkdir()
    (d / "clients" / "ca.pem").write_bytes(devpki.pem_cert(ca.cert))
    (d / "clients" / "ca.crl.pem").write_bytes(
        devpki.make_crl(ca, [issued["revoked"].cert.serial_number]).public_bytes(Encoding.PEM))
    (d / "ca.key").write_bytes(devpki.pem_key(ca.key))
    return {p.stem if p.suffix == ".pem" else p.stem + "-key" if p.suffix == ".key" else p.name: p
            for p in d.iterdir()}


def _serve_https(relay: Relay, tls: dict[str, Path], settings: Settings | None = None) -> tuple[int, uvicorn.Server]:
    app = create_app(settings or relay.settings, connect=relay.client, client_ca=tls["clients"])
    return serve(app, **server_options(tls["server"], tls["server-key"], tls["clients"]))


def _call(url: str, *, method: str = "GET", token: str | None = None, body: bytes | None = None,
          context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _client_context(tls: dict[str, Path], who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls["ca"]))
    if who:
        ctx.load_cert_chain(str(tls[who]), str(tls[f"{who}-key"]))
    return ctx


def test_mutual_tls_maps_the_certificate_to_its_agency(relay: Relay, tls: dict[str, Path]) -> None:
    """Over HTTPS, A's client certificate acts as A with no token (sends, lists its own); a
    certificate for A from another CA is refused in the handshake; without a certificate a token
    still works and without either the answer is 401."""
    port, server = _serve_https(relay, tls)
    base = f"https://127.0.0.1:{port}"
    try:
        doc = relay.document(A, [B], subject="mTLS")
        status, sent = _call(f"{base}/v1/documents", method="POST", body=doc, context=_client_context(tls, "a"),
                             headers={"Content-Type": "application/xml"})
        assert status == 202 and sent["kind"] == "document", sent
        status, mine = _call(f"{base}/v1/documents/sent", context=_client_context(tls, "a"))
        assert status == 200 and [d["message_id"] for d in mine] == [sent["message_id"]]
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            _call(f"{base}/v1/documents/sent", context=_client_context(tls, "forged"))
        status, err = _call(f"{base}/v1/documents/sent", context=_client_context(tls, None))
        assert (status, err["code"]) == (401, "UNAUTHORIZED")
        status, theirs = _call(f"{base}/v1/documents/sent", context=_client_context(tls, None),
                               token=issue_token(relay.settings, B))
        assert status == 200 and theirs == []
    finally:
        server.should_exit = True


def test_mutual_tls_checks_revocation_and_the_directorys_pins(relay: Relay, tls: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """A certificate of A that its CA revoked passes the handshake (its chain and dates are fine)
    but gets 401 on /v1 and on /vxp; a new CRL dropped into the client CA's directory counts
    without a restart (A's certificate is refused once it is listed); where the directory pins
    A's certificates, a certificate of A that is not pinned gets 401 and the pinned one is served."""
    crl_file = tls["clients"] / "ca.crl.pem"
    before = crl_file.read_bytes()
    port, server = _serve_https(relay, tls)
    base = f"https://127.0.0.1:{port}"
    try:
        status, err = _call(f"{base}/v1/documents/sent", context=_client_context(tls, "revoked"))
        assert (status, err["code"]) == (401, "UNAUTHORIZED") and "revoked" in err["message"], err
        vxp = VxpClient(f"{base}/vxp", A, secret_book(relay.settings).ensure(A),
                        context=_client_context(tls, "revoked"))
        answer = vxp.agencies()
        assert vxp.last_status == 401 and answer["status"] == "FAIL" and "revoked" in answer["ErrorDesc"], answer
        assert _call(f"{base}/v1/documents/sent", context=_client_context(tls, "a"))[0] == 200
        ca = devpki.load_ca(tls["ca"], tls["ca-key"])
        listed = [load_pem_x509_certificate(tls[n].read_bytes()).serial_number for n in ("revoked", "a")]
        crl_file.write_bytes(devpki.make_crl(ca, listed).public_bytes(Encoding.PEM))
        deadline, status = time.monotonic() + 15, 200
        while status != 401 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = _call(f"{base}/v1/documents/sent", context=_client_context(tls, "a"))[0]
        assert status == 401
    finally:
        crl_file.write_bytes(before)
        server.should_exit = True
    raw = yaml.safe_load(relay.settings.topology.read_text(encoding="utf-8"))
    second = fingerprint(load_pem_x509_certificate(tls["second"].read_bytes()))
    for entry in raw["agencies"]:
        if entry["organ_id"] == A:
            entry["cert_sha256"] = [second]
    (tmp_path / "pinned.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    pinned: Settings = dataclasses.replace(relay.settings, topology=tmp_path / "pinned.yaml",
                                           data_dir=tmp_path / "data")
    port, server = _serve_https(relay, tls, pinned)
    try:
        status, err = _call(f"https://127.0.0.1:{port}/v1/documents/sent", context=_client_context(tls, "a"))
        assert (status, err["code"]) == (401, "UNAUTHORIZED") and "pins" in err["message"], err
        assert _call(f"https://127.0.0.1:{port}/v1/documents/sent", context=_client_context(tls, "second"))[0] == 200
    finally:
        server.should_exit = True


def test_tokens_expire_are_revoked_and_rotated(relay: Relay) -> None:
    """A revoked token and an expired one get 401 saying why; rotate makes the old token fail and
    the new one work; `list` shows ids and states, never a token."""
    port, server = serve(create_app(relay.settings, connect=relay.client))
    url = f"http://127.0.0.1:{port}/v1/agencies"
    try:
        book = tokens(relay.settings)
        entry, token = book.issue(A, days=30)
        assert _call(url, token=token)[0] == 200
        book.revoke(entry.id)
        status, err = _call(url, token=token)
        assert (status, err["code"]) == (401, "UNAUTHORIZED") and "revoked" in err["message"]
        _entry, short = book.issue(A, days=1 / 86400)  # one second
        time.sleep(1.2)
        status, err = _call(url, token=short)
        assert (status, err["code"]) == (401, "UNAUTHORIZED") and "expired" in err["message"]
        old = issue_token(relay.settings, B)
        rotated = relay.cli("gateway", "token", "rotate", B)
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert _call(url, token=old)[0] == 401 and _call(url, token=new)[0] == 200
        listed = relay.cli("gateway", "token", "list")
        assert listed.returncode == 0 and new not in listed.stdout and old not in listed.stdout
        assert "revoked" in listed.stdout and "valid" in listed.stdout
        refused = relay.cli("gateway", "token", "revoke", "no-such-token")
        assert refused.returncode == 2 and "NOT_FOUND" in refused.stderr
    finally:
        server.should_exit = True


def test_tokens_issued_at_once_all_survive_in_a_private_file(relay: Relay) -> None:
    """Eight issuers at once: every token works afterwards; the file is 0600."""
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(issue_token(relay.settings, A))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    book = tokens(relay.settings)
    assert len(got) == 8 and all(book.agency_of(t) == A for t in got)
    assert stat.S_IMODE(book.path.stat().st_mode) == 0o600


def test_bodies_and_uploads_are_bounded_and_nothing_is_served_without_credentials(relay: Relay) -> None:
    """A transfer-status body over 64 KiB: 413 BODY_TOO_LARGE; a fifth upload of one agency while
    four are in progress: 429 TOO_MANY_UPLOADS; /metrics is not served on the gateway's port and
    /openapi.json needs a token."""
    port, server = serve(create_app(relay.settings, connect=relay.client, max_uploads=4))
    base = f"http://127.0.0.1:{port}"
    token = issue_token(relay.settings, A)
    held: list[socket.socket] = []
    try:
        status, err = _call(f"{base}/v1/documents/received/x/transfer-status", method="PUT", token=token,
                            body=b'{"status": "done", "pad": "' + b"x" * 70_000 + b'"}',
                            headers={"Content-Type": "application/json"})
        assert (status, err["code"]) == (413, "BODY_TOO_LARGE")
        for _ in range(4):  # slow senders: headers and a first part of the body, then nothing
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"POST /v1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Type: application/xml\r\nContent-Length: 100000\r\n\r\n<edXML".encode())
            held.append(s)
        time.sleep(0.5)
        status, err = _call(f"{base}/v1/documents", method="POST", token=token, body=relay.document(A, [B]),
                            headers={"Content-Type": "application/xml"})
        assert (status, err["code"]) == (429, "TOO_MANY_UPLOADS")
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.5)
        status, ok = _call(f"{base}/v1/documents", method="POST", token=token, body=relay.document(A, [B]),
                           headers={"Content-Type": "application/xml"})
        assert status == 202, ok
        assert _call(f"{base}/metrics")[0] == 404
        status, err = _call(f"{base}/openapi.json")
        assert (status, err["code"]) == (401, "UNAUTHORIZED")
        status, schema = _call(f"{base}/openapi.json", token=token)
        assert status == 200 and "/v1/documents" in schema["paths"]
    finally:
        for s in held:
            s.close()
        server.should_exit = True


def test_dashboard_checks_the_host_and_its_token(relay: Relay) -> None:
    """A request naming another host (DNS rebinding) gets 421; with a token configured, a request
    without it gets 401, with ?token= it gets the page and a cookie that serves the next one."""
    port, server = serve(dashboard_app(relay.settings, token="s3cret-dashboard-token"))
    base = f"http://127.0.0.1:{port}/"
    try:
        status, err = _call(base, headers={"Host": "attacker.example:8090"})
        assert (status, err["code"]) == (421, "HOST_NOT_ALLOWED")
        status, err = _call(base)
        assert (status, err["code"]) == (401, "UNAUTHORIZED")
        with urllib.request.urlopen(base + "?token=s3cret-dashboard-token", timeout=30) as resp:
            assert resp.status == 200 and b"H41" in resp.read()
            cookie = resp.headers["set-cookie"].split(";")[0]
        status, page = _call(base, headers={"Cookie": cookie})
        assert status == 200 and b"national" in page
    finally:
        server.should_exit = True


def test_refusals_are_in_the_readers_language_and_keep_their_codes(relay: Relay, tls: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway run as a deployment runs it (no language set), over HTTPS: a refusal's
    ``message`` is Vietnamese for a client that names no language or only one we do not have, and
    English for one whose Accept-Language prefers it; ``code`` and the HTTP status never change.
    A refusal that carries another (a revoked client certificate) is Vietnamese all through, its
    date as Vietnamese writes it; the gateway's own refusals (a body over a route's limit) and the
    checks of a document it reads (a sender who is not the caller) are translated too."""
    monkeypatch.delenv("LIENTHONG_LANG", raising=False)
    port, server = _serve_https(relay, tls)
    base = f"https://127.0.0.1:{port}"

    def ask(path: str, who: str | None, accept: str | None, **kw: Any) -> tuple[int, Any]:
        headers = {**({"Accept-Language": accept} if accept else {}), **kw.pop("headers", {})}
        return _call(f"{base}{path}", context=_client_context(tls, who), headers=headers, **kw)

    try:
        for accept in (None, "fr-FR, de;q=0.5"):
            assert ask("/v1/documents/sent", None, accept) == (401, {"code": "UNAUTHORIZED", "message":
                                                                  "hãy gửi 'Authorization: Bearer <token>' hoặc "
                                                                  "chứng thư số máy khách"})
        assert ask("/v1/documents/sent", None, "en-GB,en;q=0.8,vi;q=0.5") == (401, {
            "code": "UNAUTHORIZED", "message": "send 'Authorization: Bearer <token>' or a client certificate"})
        status, vi = ask("/v1/documents/sent", "revoked", "vi-VN")
        assert (status, vi["code"]) == (401, "UNAUTHORIZED") and re.fullmatch(
            r"chứng thư số máy khách không được chấp nhận: chứng thư số '[^']+' đã bị thu hồi ngày \d\d/\d\d/\d{4}",
            vi["message"]), vi
        status, en = ask("/v1/documents/sent", "revoked", "en")
        assert (status, en["code"]) == (401, "UNAUTHORIZED") and re.fullmatch(
            r"the client certificate is not accepted: certificate '[^']+' was revoked on \d{4}-\d\d-\d\d",
            en["message"]), en
        doc = relay.document(B, [A], subject="không phải của A")
        xml = {"Content-Type": "application/xml"}
        assert ask("/v1/documents", "a", None, method="POST", body=doc, headers=xml) == (403, {
            "code": "SENDER_NOT_ALLOWED",
            "message": f"thông tin xác thực này là của {A!r}, nhưng gói tin là của {B!r}"})
        assert ask("/v1/documents", "a", "en", method="POST", body=doc, headers=xml) == (403, {
            "code": "SENDER_NOT_ALLOWED", "message": f"these credentials belong to {A!r}, the message is from {B!r}"})
        big = b"{" + b" " * 70_000 + b"}"
        assert ask("/v1/documents/received/x/transfer-status", "a", None, method="PUT", body=big) == (413, {
            "code": "BODY_TOO_LARGE", "message": "đường dẫn này chỉ nhận nội dung tối đa 65536 byte"})
        assert ask("/v1/documents/received/x/transfer-status", "a", "en", method="PUT", body=big) == (413, {
            "code": "BODY_TOO_LARGE", "message": "this route accepts at most 65536 bytes"})
    finally:
        server.should_exit = True
