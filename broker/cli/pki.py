"""``lienthong pki``: the development PKI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from broker.cli.app import load_topology, main, settings
from broker.i18n import _
from broker.relay import devpki
from broker.settings import PkiLayout


@main.group()
def pki() -> None:
    """Development PKI (FOR DEVELOPMENT ONLY)."""


def _warn() -> None:
    click.secho(_("WARNING: {warning}", warning=_(devpki.WARNING)), fg="red", bold=True, err=True)


@pki.command("init")
@click.argument("directory")
@click.option("--topology", "topology_path", default=None,
              help="The topology (default: as the settings find it: LIENTHONG_TOPOLOGY, the data directory, config/).")
@click.option("--transport-ca", "transport", default=None,
              help="The broker TLS CA's directory (ca.pem, ca.key) to issue broker accounts from; "
                   "made there if absent. Default: $LIENTHONG_TRANSPORT_CA, else DIRECTORY/transport.")
def pki_init(directory: str, topology_path: str, transport: str | None) -> None:
    """Create a root CA, hub and agency keys and certificates, their broker accounts' client
    certificates, and a CRL in DIRECTORY."""
    s = settings(topology_path)
    topo = load_topology(s)
    _warn()
    d = devpki.init(directory, topo, Path(transport) if transport else s.transport_ca)
    click.echo(_("dev PKI in {dir}: anchor {anchor}, CRL {crl}, {hubs} hubs, {agencies} agencies", dir=d,
                 anchor=d / "root-ca.pem", crl=d / "root-ca.crl.pem", hubs=len(topo.hubs),
                 agencies=len(topo.agencies)))


def _one_principal(command: Callable[..., None]) -> Callable[..., None]:
    """The arguments of 'issue' and 'export': which principal, from which PKI, into which directory."""
    for option in reversed((
            click.argument("kind", type=click.Choice(["hub", "agency"])),
            click.argument("principal"),
            click.option("--ca", "ca_dir", required=True, help="The dev PKI made by 'pki init' (with the CA keys)."),
            click.option("--out", "out", required=True, help="Where to write this one principal's material."),
            click.option("--topology", "topology_path", default=None,
                         help="The topology (default: as the settings find it: LIENTHONG_TOPOLOGY, the data "
                              "directory, config/)."),
            click.option("--transport-ca", "transport", default=None,
                         help="The broker TLS CA's directory (see init)."))):
        command = option(command)
    return command


def _one(make: Callable[..., Path], kind: str, principal: str, ca_dir: str, out: str, topology_path: str,
         transport: str | None) -> None:
    s = settings(topology_path)
    src = PkiLayout(Path(ca_dir), Path(transport) if transport else s.transport_ca)
    dest = make(src, PkiLayout(Path(out), Path(out) / "transport"), load_topology(s), kind, principal)
    click.echo(_("{kind} {principal}: material in {dir}", kind=kind, principal=principal, dir=dest))


@pki.command("issue")
@_one_principal
def pki_issue(**args: Any) -> None:
    """Issue one hub's or one agency's material alone into OUT (an empty directory), to copy to
    that host: its signing pair, its broker account(s), the trust anchor, the CRL and the broker
    CA's certificate. No CA key is written to OUT."""
    _warn()
    _one(devpki.issue_one, **args)


@pki.command("export")
@_one_principal
def pki_export(**args: Any) -> None:
    """Copy one hub's or one agency's existing material alone into OUT (an empty directory), with
    the public files beside it, issuing nothing new (so every host keeps the others' current
    certificates). No CA key and no other principal's key is written to OUT."""
    _one(devpki.export_one, **args)


@pki.command("broker-tls")
@click.argument("directory")
@click.option("--host", "hosts", multiple=True, default=("localhost", "127.0.0.1"), show_default=True,
              help="A name or address the broker is reached by (repeat).")
def pki_broker_tls(directory: str, hosts: tuple[str, ...]) -> None:
    """Make the broker's TLS material in DIRECTORY: the transport CA (ca.pem, ca.key; kept if
    present) and a server certificate for HOSTs (server.pem, server.key)."""
    d = Path(directory)
    devpki.write_pair((d / "server.key", d / "server.pem"), devpki.issue_server(devpki.transport_ca(d), hosts))
    click.echo(_("broker TLS material in {dir}: CA {ca}, server certificate for {hosts}", dir=d, ca=d / "ca.pem",
                 hosts=", ".join(hosts)))


@pki.command("revoke")
@click.argument("directory")
@click.argument("certs", nargs=-1, required=True)
def pki_revoke(directory: str, certs: tuple[str, ...]) -> None:
    """Revoke certificates (PEM files) in the dev PKI's CRL."""
    _warn()
    devpki.revoke(directory, [Path(c) for c in certs])
    click.echo(_("revoked {n} certificate(s); CRL re-signed", n=len(certs)))
