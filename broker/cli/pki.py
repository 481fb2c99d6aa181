"""``lienthong pki``: the development PKI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from broker.cli.app import load_topology, main, settings
from broker.i18n import N_, _
from broker.relay import brokercrl, devpki
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
@click.option("--agency-keys", type=click.Choice(["rsa", "ec"]), default="rsa", show_default=True,
              help="Agencies' signing keys: RSA-2048 (as tokens issue), or ECDSA P-256 (made 2,000 times "
                   "faster: for directories of thousands of agencies).")
def pki_init(directory: str, topology_path: str, transport: str | None, agency_keys: str) -> None:
    """Create a root CA, hub and agency keys and certificates, their broker accounts' client
    certificates, and a CRL in DIRECTORY."""
    s = settings(topology_path)
    topo = load_topology(s)
    _warn()
    d = devpki.init(directory, topo, Path(transport) if transport else s.transport_ca, agency_keys=agency_keys)
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
@click.option("--transport-ca", "transport", default=None,
              help="The broker TLS CA's directory (see init), for broker accounts' certificates.")
def pki_revoke(directory: str, certs: tuple[str, ...], transport: str | None) -> None:
    """Revoke certificates (PEM files): a signing certificate in the root's CRL, a broker
    account's (amqp-*-cert.pem) in the transport CA's CRL, which the broker reads at each login."""
    from cryptography import x509

    from broker.core.errors import UsageError

    _warn()
    keys = PkiLayout(Path(directory), Path(transport) if transport else settings().transport_ca)
    root = x509.load_pem_x509_certificate(keys.anchor.read_bytes()) if keys.anchor.exists() else None
    broker_ca = x509.load_pem_x509_certificate(keys.broker_ca.read_bytes()) if keys.broker_ca.exists() else None
    signing: list[Path] = []
    accounts: list[x509.Certificate] = []
    for c in certs:
        try:
            cert = x509.load_pem_x509_certificate(Path(c).read_bytes())
        except (OSError, ValueError):
            raise UsageError(N_("{file} is not a PEM certificate"), file=c) from None
        if root is not None and brokercrl.issued_by(cert, root):
            signing.append(Path(c))
        elif broker_ca is not None and brokercrl.issued_by(cert, broker_ca):
            accounts.append(cert)
        else:
            raise UsageError(N_("{file} was issued neither by {root} nor by {broker_ca}"), file=c,
                             root=str(keys.anchor), broker_ca=str(keys.broker_ca))
    if signing:
        devpki.revoke(directory, signing)
        click.echo(_("revoked {n} signing certificate(s); {crl} re-signed", n=len(signing),
                     crl=str(keys.root / "root-ca.crl.pem")))
    if accounts:
        path, users = brokercrl.revoke(keys.transport_ca, accounts)
        click.echo(_("revoked broker account(s) {users}; {crl} re-signed: the broker refuses them from the next "
                     "login (open connections: rabbitmqctl close_all_user_connections USER revoked)",
                     users=", ".join(users), crl=str(path)))


@pki.command("broker-crl")
@click.argument("directory")
@click.option("--if-due", is_flag=True, help="Only when it is missing or expires within 10 days.")
def pki_broker_crl(directory: str, if_due: bool) -> None:
    """Re-sign the transport CA's CRL in DIRECTORY (made empty if there is none), keeping what it
    revokes. The broker refuses every client certificate once it is past its nextUpdate."""
    path = brokercrl.renew(Path(directory), if_due=if_due)
    crl = brokercrl.read(Path(directory))
    assert crl is not None
    state = _("re-signed {file}", file=str(path)) if path else _("not due")
    click.echo(_("transport CRL: {state}; {n} revoked, good until {until} UTC", state=state, n=len(list(crl)),
                 until=f"{crl.next_update_utc:%Y-%m-%d %H:%M}"))
