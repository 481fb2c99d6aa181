"""``lienthong pki``: the development PKI."""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.app import main
from broker.core.topology import Topology
from broker.relay import devpki


@main.group()
def pki() -> None:
    """Development PKI (FOR DEVELOPMENT ONLY)."""


@pki.command("init")
@click.argument("directory")
@click.option("--topology", "topology_path", default="config/topology.yaml", show_default=True)
def pki_init(directory: str, topology_path: str) -> None:
    """Create a root CA, hub and agency keys and certificates, and a CRL in DIRECTORY."""
    topo = Topology.load(topology_path)
    click.secho("WARNING: " + devpki.WARNING, fg="red", bold=True, err=True)
    d = devpki.init(directory, topo)
    click.echo(f"dev PKI in {d}: anchor {d / 'root-ca.pem'}, CRL {d / 'root-ca.crl.pem'}, "
               f"{len(topo.hubs)} hubs, {len(topo.agencies)} agencies")


@pki.command("revoke")
@click.argument("directory")
@click.argument("certs", nargs=-1, required=True)
def pki_revoke(directory: str, certs: tuple[str, ...]) -> None:
    """Revoke certificates (PEM files) in the dev PKI's CRL."""
    click.secho("WARNING: " + devpki.WARNING, fg="red", bold=True, err=True)
    devpki.revoke(directory, [Path(c) for c in certs])
    click.echo(f"revoked {len(certs)} certificate(s); CRL re-signed")
