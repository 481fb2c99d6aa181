"""Running the relay and using it as an agency: broker setup, hub run, send, inbox, status-send."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from adapters.sdk import save_item
from broker import i18n, logs
from broker.cli.app import load_topology, main, read_file, settings, topology_file
from broker.cli.clients import agency_client, agency_key
from broker.core import errors
from broker.core.topology import Topology
from broker.i18n import N_, _
from broker.logs import get_logger
from broker.pkcs11 import EXIT_PIN_REFUSED
from broker.relay import layout, metrics
from broker.relay.amqp.session import AmqpTransport
from broker.relay.assemble import start_hub
from broker.relay.provision import Management, apply, setup_hub, sync_hub
from broker.relay.worker import HubWorker, Provision
from broker.settings import Settings


@main.group("broker")
def broker_group() -> None:
    """RabbitMQ layout of the topology."""


@broker_group.command("setup")
@click.option("--hub", "hub_id", default=None,
              help="Only this hub, on its own broker, with that broker's admin account (LIENTHONG_MGMT_URL): "
                   "what one operator runs. Without it, every hub (development: one admin everywhere).")
def broker_setup(hub_id: str | None) -> None:
    """Declare vhosts, users, permissions, exchanges and queues (idempotent)."""
    s = settings()
    topology = load_topology(s)
    if hub_id is None:
        counts = apply(topology, s.mgmt_url)
    elif hub_id not in topology.hubs:
        raise errors.UsageError(N_("hub {hub!r} is not in the topology"), hub=hub_id)
    else:
        counts = setup_hub(topology, hub_id, Management(s.mgmt_url))
    click.echo(setup_line(counts))


def setup_line(counts: dict[str, int]) -> str:
    """What ``broker setup`` declared, counted (the counts' names are RabbitMQ's: vhosts, users...)."""
    return _("broker setup: {counts}", counts=", ".join(f"{v} {k}" for k, v in counts.items()))


@main.group()
def hub() -> None:
    """Hub workers."""


@hub.command("run")
@click.argument("hub_id")
@click.option("--prefetch", default=256, show_default=True, help="Unacked messages in flight.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
def hub_run(hub_id: str, prefetch: int, metrics_port: int | None) -> None:
    """Run one worker of HUB_ID until stopped (SIGTERM/SIGINT).  Exits 78 when its token refuses
    the PIN of the hub's key: a token locks after a few wrong PINs, so it is not tried again."""
    s = settings()
    topology_file(s)  # read once, by start_hub
    try:
        hub = start_hub(s, hub_id)
    except errors.CredentialRefused as exc:
        click.echo(exc.line(i18n.current().gettext), err=True)
        sys.exit(EXIT_PIN_REFUSED)
    logs.add_tap(metrics.count_alerts(hub_id))  # alert log events as a counter, for Prometheus' rules
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    HubWorker(hub.hop, hub.store, s.keys, AmqpTransport(), trust=hub.trust, crl_cache=hub.trust.crl_cache,
              prefetch=prefetch, tuning=s.tuning, directories=hub.directories,
              provision=own_broker(s, hub_id)).run()


def own_broker(s: Settings, hub_id: str) -> Provision:
    """How hub ``hub_id`` makes a new directory's objects on its own broker: with its operator's admin
    account (``LIENTHONG_MGMT_URL``) for accounts and rights, its own hub account for the rest."""

    def provision(old: Topology, new: Topology) -> None:
        try:
            declare_url = layout.account_url(new, hub_id, s.keys.hub_account(hub_id, "hub"), s.keys.broker_ca)
            counts = sync_hub(old, new, hub_id, Management(s.mgmt_url), declare_url)
        except errors.ConfigError as exc:  # no admin account here, or the broker refused it: tried again later
            raise errors.TransientError(N_("this hub cannot make the directory's accounts on its broker: {reason}"),
                                        reason=exc.message) from None
        get_logger("lienthong.directory").info("broker objects of the directory made", hub=hub_id, **counts)

    return provision


@main.command()
@click.argument("file")
@click.option("--as", "agency", required=True, help="The sending agency (its own credentials are used).")
def send(file: str, agency: str) -> None:
    """Push a signed edXML FILE to the agency's hub over AMQP."""
    s = settings()
    load_topology(s)
    message_id = agency_client(s, agency).send(read_file(file))
    click.echo(_("sent {file} as {agency}: message {message_id}", file=file, agency=agency, message_id=message_id))


@main.command()
@click.argument("agency")
@click.option("--fetch", "fetch_dir", default=None, help="Take messages into this folder (acked once written).")
@click.option("--wait", default=0.0, show_default=True, help="Seconds to wait for a first message.")
@click.option("--limit", default=100, show_default=True, help="At most this many messages.")
def inbox(agency: str, fetch_dir: str | None, wait: float, limit: int) -> None:
    """List the agency's inbox, or with --fetch take its messages into a folder."""
    s = settings()
    load_topology(s)
    client = agency_client(s, agency)
    if fetch_dir is None:
        items = client.peek(limit=limit)
        for item in items:
            click.echo(_("{kind:8} {message_id}  hops={hops}  {size} bytes", kind=item.kind,
                         message_id=item.message_id, hops=len(item.trace), size=len(item.body)))
        click.echo(_("{n} message(s) in the inbox of {agency}", n=len(items), agency=agency))
        return
    n = client.fetch(lambda item: click.echo(f"{item.kind:8} -> {save_item(Path(fetch_dir), item)}"),
                     limit=limit, wait=wait)
    click.echo(_("took {n} message(s) into {dir}", n=n, dir=fetch_dir))


@main.command("status-send")
@click.option("--as", "agency", required=True, help="The agency sending the status (it signs it).")
@click.option("--document", "document_file", required=True, help="The received document the status is about.")
@click.option("--code", "status_code", required=True,
              type=click.Choice(["01", "02", "03", "04", "05", "06", "13", "15", "16"]),
              help="01 received, 02 rejected, 03 accepted, 04 assigned, 05 processing, 06 completed, "
                   "13 revocation requested, 15 change accepted, 16 change refused.")
@click.option("--description", default="", help="Free text for the sender.")
@click.option("-o", "--output", default=None, help="Also keep the signed status here.")
def status_send(agency: str, document_file: str, status_code: str, description: str, output: str | None) -> None:
    """Sign an edXML status about a received document and send it back through the hubs."""
    s = settings()
    client = agency_client(s, agency)
    signed = client.status_for(read_file(document_file), status_code, description=description,
                               key=agency_key(s, agency), name=load_topology(s).agency(agency).name)
    if output:
        Path(output).write_bytes(signed)
    message_id = client.send(signed)
    click.echo(_("status {code} sent as {agency}: message {message_id}", code=status_code, agency=agency,
                 message_id=message_id))
