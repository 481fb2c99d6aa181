"""The agency-side servers: the REST gateway and the folder drop."""

from __future__ import annotations

import json
from pathlib import Path

import click

from adapters.folder import FolderAdapter
from broker.cli.app import main, settings
from broker.cli.clients import agency_client
from broker.core import errors
from broker.core.signer import SigningKey
from broker.settings import Fault


@main.group()
def gateway() -> None:
    """REST gateway for document systems (HTTP + JSON)."""


@gateway.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def gateway_run(host: str, port: int) -> None:
    """Serve the REST gateway (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from adapters.gateway import create_app

    s = settings()
    uvicorn.run(create_app(s, connect=lambda agency: agency_client(s, agency)), host=host, port=port,
                log_level="warning")


@gateway.command("token")
@click.argument("agency")
def gateway_token(agency: str) -> None:
    """Issue a bearer token for AGENCY (printed once; only its hash is kept)."""
    from adapters.gateway import issue_token

    click.echo(issue_token(settings(), agency))


@gateway.command("openapi")
def gateway_openapi() -> None:
    """Print the gateway's OpenAPI description (docs/openapi.json)."""
    from adapters.gateway import create_app

    s = settings()
    app = create_app(s, connect=lambda agency: agency_client(s, agency))
    click.echo(json.dumps(app.openapi(), indent=2, ensure_ascii=False))


@main.group()
def folder() -> None:
    """Folder drop for legacy systems."""


@folder.command("run")
@click.argument("agency")
@click.option("--root", required=True, help="The agency's folder (outbox/, inbox/, sent/, failed/ ...).")
@click.option("--key", "key_path", default=None, help="Sign unsigned files with this key...")
@click.option("--cert", "cert_path", default=None, help="...and certificate.")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between rounds.")
def folder_run(agency: str, root: str, key_path: str | None, cert_path: str | None, once: bool,
               interval: float) -> None:
    """Send what is dropped in ROOT/outbox, receive into ROOT/inbox, until stopped."""
    if bool(key_path) != bool(cert_path):
        raise errors.UsageError("--key and --cert go together")
    key = SigningKey.load(key_path, cert_path) if key_path and cert_path else None
    s = settings()
    adapter = FolderAdapter(agency_client(s, agency), Path(root), key, fault=Fault.parse(s.tuning.fault))
    if once:
        st = adapter.run_once()
        click.echo(f"sent {st.sent}, failed {st.failed}, received {st.received}")
        return
    adapter.run(interval=interval)

