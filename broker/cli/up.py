"""``lienthong up``: the whole relay on one machine, for development and demonstration.

Creates the dev PKI if absent, applies the broker layout, starts one (or more) worker process per
hub and supervises them (``broker.relay.supervise``).  With ``--demo`` it sends a signed document
from a commune of the two-tier province to a commune of the three-tier province and shows its
arrival with the signed hop trace.
"""

from __future__ import annotations

import signal
import sys
import time

import click

from adapters.sdk import InboxItem
from broker.cli.app import load_topology, main, settings
from broker.cli.clients import agency_client, agency_key
from broker.cli.relay import setup_line
from broker.core.edxml import Organ, build_document
from broker.core.hoprecords import parse_record
from broker.core.signer import sign
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.i18n import N_, _
from broker.relay import devpki
from broker.relay.provision import apply
from broker.relay.supervise import Supervisor, start_worker
from broker.settings import Settings

DEMO_FROM = "000.00.51.H41"  # UBND xã Hưng Nguyên, Nghệ An (two-tier)
DEMO_TO = "001.00.31.H14"    # UBND xã Dân Chủ, Hòa An, Cao Bằng (three-tier)
METRICS_BASE = 9101          # Prometheus metrics of hub n (topology order) on 127.0.0.1:9101+n
YES_NO = (N_("True"), N_("False"))  # how a yes-or-no figure is shown (in English, as Python writes it)


@main.command()
@click.option("--workers", default=1, show_default=True, help="Worker processes per hub.")
@click.option("--demo/--no-demo", default=False, help="Send a document across provinces and show it arrive.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the hubs once the demo document arrived.")
def up(workers: int, demo: bool, exit_after_demo: bool) -> None:
    """Run the whole relay of the topology on this machine (dev PKI, broker setup, every hub)."""
    sys.exit(run_all(settings(), workers=workers, demo=demo, exit_after_demo=exit_after_demo))


def ensure_pki(settings: Settings, topology: Topology) -> None:
    if not settings.keys.anchor.exists():
        click.secho(_("WARNING: {warning}", warning=_(devpki.WARNING)), fg="red", bold=True, err=True)
        devpki.init(settings.pki, topology, settings.transport_ca)  # accounts the broker's CA vouches for
        click.echo(_("created dev PKI in {dir}", dir=settings.pki))


def run_all(settings: Settings, *, workers: int = 1, demo: bool = False, exit_after_demo: bool = False) -> int:
    topology = load_topology(settings)
    ensure_pki(settings, topology)
    counts = apply(topology, settings.mgmt_url)
    click.echo(setup_line(counts))
    ports = {h: METRICS_BASE + n for n, h in enumerate(topology.hubs)}  # first worker of each hub
    workers_of = Supervisor(lambda h, i: start_worker(h, ports[h] if i == 0 else None),
                            [(h, i) for h in topology.hubs for i in range(workers)])
    click.echo(_("relay up: {n} worker(s) for hubs {hubs}; metrics on 127.0.0.1:{first}-{last}; Ctrl-C stops",
                 n=len(workers_of.procs), hubs=", ".join(topology.hubs), first=METRICS_BASE,
                 last=METRICS_BASE + len(ports) - 1))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        if demo:
            code = run_demo(settings, topology)
            if exit_after_demo:
                return code
        while not stopping:
            workers_of.poll()
            time.sleep(0.5)
    finally:
        workers_of.stop()
    return code


def run_demo(settings: Settings, topology: Topology) -> int:
    """Send one signed document across provinces and wait for it in the recipient's inbox."""
    sender, recipient = topology.agency(DEMO_FROM), topology.agency(DEMO_TO)
    doc = build_document(Organ(sender.organ_id, sender.name), [Organ(recipient.organ_id, recipient.name)],
                         subject="Công văn liên thông thử nghiệm giữa hai tỉnh",
                         attachments=[("cong-van.txt", "text/plain", "Nội dung công văn.".encode())])
    signed = sign(doc, agency_key(settings, DEMO_FROM))
    click.echo(_("demo: {sender} ({sender_id}, hub {sender_hub}) -> {recipient} ({recipient_id}, hub "
                 "{recipient_hub})", sender=sender.name, sender_id=sender.organ_id, sender_hub=sender.hub,
                 recipient=recipient.name, recipient_id=recipient.organ_id, recipient_hub=recipient.hub))
    message_id = agency_client(settings, DEMO_FROM).send(signed)
    click.echo(_("demo: sent message {message_id}...", message_id=message_id[:16]))
    inbox = agency_client(settings, DEMO_TO)
    got: list[InboxItem] = []
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        inbox.fetch(lambda item: got.append(item) if item.message_id == message_id else None, wait=1.0)
    if not got:
        click.echo(_("demo: the document did not arrive within 60 s"), err=True)
        return 1
    item = got[0]
    checked = check(item.body, trust=TrustStore.load(settings.pki), topology=topology)
    click.echo(_("demo: delivered to {recipient}; bytes unchanged: {same}; sender signature verifies: {verified}",
                 recipient=DEMO_TO, same=_(str(item.body == signed)), verified=_(str(checked.signature is not None))))
    for token in item.trace:
        rec = parse_record(token)
        click.echo(_("  hop {hub:9} {at}  {verdict:9} -> {targets}", hub=rec.hub, at=rec.at, verdict=rec.verdict,
                     targets=", ".join(rec.targets)))
    return 0 if item.body == signed else 1
