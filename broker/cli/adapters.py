"""The agency-side servers: the REST gateway and the folder drop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from adapters.folder import FolderAdapter
from broker import i18n
from broker.cli.app import load_topology, main, settings
from broker.cli.clients import agency_client
from broker.core import errors
from broker.i18n import N_, _
from broker.relay.assemble import signing_key
from broker.settings import Fault


@main.group()
def gateway() -> None:
    """REST gateway for document systems (HTTP + JSON)."""


@gateway.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8443, show_default=True, help="Port to listen on.")
@click.option("--cert", "cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The gateway's TLS certificate (PEM; 'lienthong pki broker-tls' can make one).")
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False), default=None, help="...and its key.")
@click.option("--client-ca", "client_ca", type=click.Path(exists=True), default=None,
              help="Accept client certificates from these CAs (a PEM file, or a trust store directory, with "
                   "their CRLs): the subject UID names the agency (mutual TLS; required by /vxp).")
@click.option("--vxp-hmac-only", is_flag=True,
              help="Let /vxp requests in without a client certificate (HMAC alone, within 5 minutes): weaker.")
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP (only behind a TLS-terminating proxy on the same host).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@click.option("--max-uploads", default=4, show_default=True, help="Uploads in progress per agency.")
def gateway_run(host: str, port: int, cert: str | None, key: str | None, client_ca: str | None,
                vxp_hmac_only: bool, insecure_http: bool, metrics_port: int | None, max_uploads: int) -> None:
    """Serve the REST gateway over HTTPS (OpenAPI at /openapi.json, with a token), and the national
    axis protocol under /vxp (mutual TLS and the agency's secret: 'lienthong vxp secret')."""
    import uvicorn

    from adapters.gateway import create_app
    from adapters.https import server_options

    if not cert and not insecure_http:
        raise errors.UsageError(N_("give --cert and --key (HTTPS), or --insecure-http behind a TLS proxy"))
    if bool(cert) != bool(key):
        raise errors.UsageError(N_("{first} and {second} go together"), first="--cert", second="--key")
    if client_ca and not cert:
        raise errors.UsageError(N_("--client-ca needs HTTPS (--cert and --key)"))
    s = settings()
    load_topology(s)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    if vxp_hmac_only:
        click.secho("WARNING: --vxp-hmac-only: /vxp takes requests without a client certificate; a header pair "
                    "captured from one call of an agency serves any call of it for up to 5 minutes", fg="red",
                    bold=True, err=True)
    elif not client_ca:
        click.echo("note: /vxp refuses every call: it needs --client-ca (mutual TLS) or --vxp-hmac-only", err=True)
    ca = Path(client_ca) if client_ca else None
    app = create_app(s, connect=lambda agency: agency_client(s, agency), max_uploads=max_uploads, client_ca=ca,
                     vxp_hmac_only=vxp_hmac_only, lang=i18n.language())
    tls = server_options(Path(cert) if cert else None, Path(key) if key else None, ca)
    uvicorn.run(app, host=host, port=port, log_level="warning", **tls)


@gateway.group("token")
def gateway_token() -> None:
    """Bearer tokens of agencies (only their SHA-256 is kept)."""


@gateway_token.command("issue")
@click.argument("agency")
@click.option("--days", default=90.0, show_default=True, help="Valid for this many days.")
def token_issue(agency: str, days: float) -> None:
    """Issue a token for AGENCY (printed once)."""
    from adapters.gateway import issue_token

    s = settings()
    load_topology(s)
    click.echo(issue_token(s, agency, days))


@gateway_token.command("rotate")
@click.argument("agency")
@click.option("--days", default=90.0, show_default=True, help="Valid for this many days.")
def token_rotate(agency: str, days: float) -> None:
    """Issue a new token for AGENCY and revoke all its others (the new one is printed once)."""
    from adapters.gateway import tokens

    s = settings()
    load_topology(s).agency(agency)
    _entry, token, gone = tokens(s).rotate(agency, days)
    click.echo(token)
    click.echo(_("revoked {n} older token(s) of {agency}", n=len(gone), agency=agency), err=True)


@gateway_token.command("revoke")
@click.argument("token_or_id")
def token_revoke(token_or_id: str) -> None:
    """Revoke a token, given itself or its id (see 'list')."""
    from adapters.gateway import tokens

    for t in tokens(settings()).revoke(token_or_id):
        click.echo(_("revoked {id} of {agency}", id=t.id, agency=t.agency))


@gateway_token.command("list")
def token_list() -> None:
    """Every token: id, agency, created, expires, state (never the token)."""
    from adapters.gateway import tokens

    now = time.time()
    for t in tokens(settings()).all():
        state = _("revoked") if t.revoked else _("expired") if t.expires <= now else _("valid")
        expires = _("never (rotate it)") if t.expires == float("inf") else _day(t.expires)
        click.echo(_("{id}  {agency:16} created {created}  expires {expires}  {state}", id=t.id, agency=t.agency,
                     created=_day(t.created), expires=expires, state=state))


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


@gateway.command("openapi")
def gateway_openapi() -> None:
    """Print the gateway's OpenAPI description (docs/openapi.json)."""
    from adapters.gateway import create_app

    s = settings()
    app = create_app(s, connect=lambda agency: agency_client(s, agency))
    click.echo(json.dumps(app.openapi(), indent=2, ensure_ascii=False))


@main.group()
def vxp() -> None:
    """The national axis' client protocol (served by 'gateway run' under /vxp)."""


@vxp.command("secret")
@click.argument("agency")
@click.option("--rotate", is_flag=True, help="Replace the secret (the old one stops working at once).")
def vxp_secret(agency: str, rotate: bool) -> None:
    """Print AGENCY's shared secret for the protocol's HMAC, making it if it has none."""
    from adapters.vxp import secret_book

    s = settings()
    load_topology(s).agency(agency)
    book = secret_book(s)
    click.echo(book.rotate(agency) if rotate else book.ensure(agency))


@main.group()
def folder() -> None:
    """Folder drop for legacy systems."""


@folder.command("run")
@click.argument("agency")
@click.option("--root", required=True, help="The agency's folder (outbox/, inbox/, sent/, failed/ ...).")
@click.option("--key", "key_path", default=None,
              help="Sign unsigned files with this key (a PEM file, or a PKCS#11 URI: pkcs11:...)...")
@click.option("--cert", "cert_path", default=None, help="...and certificate.")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between rounds.")
def folder_run(agency: str, root: str, key_path: str | None, cert_path: str | None, once: bool,
               interval: float) -> None:
    """Send what is dropped in ROOT/outbox, receive into ROOT/inbox, until stopped."""
    if bool(key_path) != bool(cert_path):
        raise errors.UsageError(N_("{first} and {second} go together"), first="--key", second="--cert")
    s = settings()
    load_topology(s)
    key = signing_key(key_path, cert_path, modules=s.pkcs11_modules) if key_path and cert_path else None
    adapter = FolderAdapter(agency_client(s, agency), Path(root), key, fault=Fault.parse(s.tuning.fault))
    if once:
        st = adapter.run_once()
        click.echo(_("sent {sent}, failed {failed}, received {received}", sent=st.sent, failed=st.failed,
                     received=st.received))
        return
    adapter.run(interval=interval)

