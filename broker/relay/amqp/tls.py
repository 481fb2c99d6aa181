"""TLS for broker connections, as RabbitMQ's URI spec writes it in ``amqps`` URLs: ``cacertfile``
(the CA of the broker's certificate, always verified, with its host name), ``certfile`` and
``keyfile`` (the client certificate), ``auth_mechanism=external`` (log in with that certificate).
"""

from __future__ import annotations

import functools
import ssl
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker.core.errors import ConfigError
from broker.i18n import N_

TLS_QUERY = ("cacertfile", "certfile", "keyfile", "auth_mechanism", "server_name_indication", "verify")
"""The query parameters of RabbitMQ's URI spec that lienthong understands (the rest go to pika)."""


def split_tls(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the TLS query parameters (and without the user when the certificate names
    it), and those parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    tls = {k: v for k, v in query if k in TLS_QUERY}
    if tls and parts.scheme != "amqps":
        raise ConfigError(N_("{options} given for a plain {scheme}:// URL: use amqps://"),
                          options=', '.join(sorted(tls)), scheme=parts.scheme)
    rest = urlencode([(k, v) for k, v in query if k not in TLS_QUERY])
    if tls.get("auth_mechanism", "").lower() == "external":  # the certificate names the user
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urlunsplit(parts._replace(query=rest)), tls


@functools.lru_cache(maxsize=64)
def client_context(items: tuple[tuple[str, str], ...]) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate against ``cacertfile`` (the system's
    roots without it) and its name, and presents the client certificate if one is given."""
    tls = dict(items)
    try:
        ctx = ssl.create_default_context(cafile=tls.get("cacertfile") or None)
        if tls.get("verify", "verify_peer") == "verify_none":
            raise ConfigError(N_("verify=verify_none: lienthong always verifies the broker's certificate"))
        if tls.get("certfile"):
            ctx.load_cert_chain(tls["certfile"], tls.get("keyfile") or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(N_("TLS material for the broker connection unusable: {reason}"), reason=exc) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
