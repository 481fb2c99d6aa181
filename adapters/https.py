"""Serving an ASGI app over HTTPS with uvicorn, optionally with client certificates.

uvicorn verifies a client certificate against ``client_ca`` during the handshake (chain and
validity; revocation, agency and pins: :mod:`adapters.clientcerts`) but does not hand it to the
app; :class:`PeerCertProtocol` adds it to each request's scope as the ASGI TLS extension names it
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM), so the app can map it to an agency.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from .clientcerts import handshake_cas


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, passing the verified client certificate of the connection on."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": chain}
            await inner(scope, receive, send)

        self.app = app


def client_certificate(scope: Any) -> x509.Certificate | None:
    """The client certificate the TLS handshake verified for this request, if any."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    return x509.load_pem_x509_certificate(chain[0].encode()) if chain else None


def server_options(cert: Path | None, key: Path | None, client_ca: Path | None) -> dict[str, Any]:
    """uvicorn's TLS settings: a server certificate, and client certificates verified against the
    CA certificates of ``client_ca`` (a file, or a trust store directory) when given (optional in
    the handshake: on ``/v1`` a client may use a bearer token instead)."""
    if not cert:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key) if key else None,
                               "http": PeerCertProtocol}
    if client_ca:
        bundle = client_ca
        if client_ca.is_dir():  # the server reads one file: the directory's CA certificates, public
            fd, name = tempfile.mkstemp(prefix="lienthong-client-cas-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(handshake_cas(client_ca))
            bundle = Path(name)
        options.update(ssl_ca_certs=str(bundle), ssl_cert_reqs=ssl.CERT_OPTIONAL)
    return options
