"""What pika is given: connection parameters from lienthong's ``amqps://`` URLs, a message's
properties; and what pika raises, in words."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pika
import pika.credentials
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.spec import BasicProperties

from broker.core.errors import ConfigError
from broker.i18n import N_
from broker.relay.amqp.tls import client_context, split_tls
from broker.relay.transport import Outgoing

AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError, AMQPConnectorException)
"""What pika raises when the broker or the network fails; the connector's errors (a broker that
accepts the TCP connection but never completes the handshake: ``AMQPConnectorStackTimeout``) are
not ``AMQPError``s."""


def parameters(url: str, *, heartbeat: int = 30) -> list[pika.URLParameters]:
    """Connection parameters for each node of ``url`` (several URLs separated by spaces: the nodes
    of one cluster), in the order to try them.

    ``amqps`` URLs carry their TLS material as RabbitMQ's URI spec does: ``cacertfile`` (the CA of
    the broker's certificate, which is always verified), ``certfile`` and ``keyfile`` (a client
    certificate) and ``auth_mechanism=external`` (log in with that certificate, no password)."""
    out = []
    for one in url.split():
        base, tls = split_tls(one)
        secure = base.startswith("amqps://")
        # pika would build (and load the system's roots into) a context of its own for every amqps
        # URL: parse it as amqp and give it the cached context of its TLS material instead
        params = pika.URLParameters("amqp://" + base[8:] if secure else base)
        if secure:
            params.port = urlsplit(base).port or 5671
            params.ssl_options = pika.SSLOptions(client_context(tuple(sorted(tls.items()))),
                                                 tls.get("server_name_indication") or params.host)
        if tls.get("auth_mechanism", "").lower() == "external":
            params.credentials = pika.credentials.ExternalCredentials()
        params.heartbeat = heartbeat
        params.blocked_connection_timeout = 60
        params.connection_attempts = 1
        params.socket_timeout = 10
        out.append(params)
    if not out:
        raise ConfigError(N_("no AMQP URL given"))
    return out


def reachable(url: str) -> pika.URLParameters:
    """The parameters of the first node of ``url`` that accepts a TCP connection (the first node if
    none does: connecting then fails with the broker's own error).  For the asynchronous
    connections of the hub worker, which take one node: when its node goes down, the worker's
    next session lands on a node that is up."""
    nodes = parameters(url)
    if len(nodes) > 1:
        for p in nodes:
            try:
                socket.create_connection((p.host, p.port), timeout=1.0).close()
                return p
            except OSError:
                continue
    return nodes[0]


def describe(exc: BaseException) -> str:
    """A pika error in one line."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "authentication refused"
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return f"{exc.reply_code} {exc.reply_text}"
    return text


def properties(message: Outgoing, *, content_type: str = "application/xml") -> BasicProperties:
    """Persistent, with ``timestamp`` = when the message entered the queue it is published to
    (``lienthong status`` reads it back as the age of the oldest message)."""
    return BasicProperties(content_type=content_type, delivery_mode=2, message_id=message.message_id,
                           user_id=message.user_id or None, headers=message.headers, timestamp=int(time.time()))
