"""``lienthong up``: the whole relay on one machine, for development and demonstration.

Creates the dev PKI if absent, applies the broker layout, starts one (or
more) worker process per hub and supervises them (a worker that dies is
started again).  With ``--demo`` it sends a signed document from a commune
of the two-tier province to a commune of the three-tier province and shows
its arrival with the signed hop trace.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import click

from broker.core.topology import Topology
from broker.logs import get_logger
from broker.relay import devpki
from broker.relay.provision import Credentials, apply
from broker.settings import Settings

DEMO_FROM = "000.00.51.H41"  # UBND xã Hưng Nguyên, Nghệ An (two-tier)
DEMO_TO = "001.00.31.H14"    # UBND xã Dân Chủ, Hòa An, Cao Bằng (three-tier)
METRICS_BASE = 9101          # Prometheus metrics of hub n (topology order) on 127.0.0.1:9101+n
log = get_logger("lienthong.up")


def ensure_pki(settings: Settings, topology: Topology) -> None:
    if not (settings.pki / "root-ca.pem").exists():
        click.secho("WARNING: " + devpki.WARNING, fg="red", bold=True, err=True)
        devpki.init(settings.pki, topology)
        click.echo(f"created dev PKI in {settings.pki}")


def start_worker(hub_id: str, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    extra = ["--metrics-port", str(metrics_port)] if metrics_port else []
    return subprocess.Popen([sys.executable, "-m", "broker.cli", "hub", "run", hub_id, *extra])


class Supervisor:
    """Keeps one worker process per slot running: a worker that exits is logged with its exit code
    and started again, after a back-off that doubles (1 s up to ``max_delay``) while it keeps dying
    within ``stable_seconds`` of its start, so a worker that cannot start does not spin."""

    def __init__(self, start: Callable[[str, int], subprocess.Popen[bytes]], slots: list[tuple[str, int]], *,
                 stable_seconds: float = 30.0, max_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._clock = clock
        self.stable_seconds, self.max_delay = stable_seconds, max_delay
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes] | None] = {}
        self._started: dict[tuple[str, int], float] = {}
        self._delay: dict[tuple[str, int], float] = {}
        self._due: dict[tuple[str, int], float] = {}
        self.restarts = 0
        for slot in slots:
            self._launch(slot)

    def _launch(self, slot: tuple[str, int]) -> None:
        self.procs[slot] = self._start(*slot)
        self._started[slot] = self._clock()

    def poll(self) -> None:
        """Notice exits and start what is due; call often (every half second)."""
        now = self._clock()
        for slot, p in list(self.procs.items()):
            if p is None:
                if now >= self._due[slot]:
                    self._launch(slot)
                    self.restarts += 1
                    log.info("worker restarted", hub=slot[0], slot=slot[1], restarts=self.restarts)
                continue
            if p.poll() is None:
                continue
            lived = now - self._started[slot]
            delay = 1.0 if lived >= self.stable_seconds else min(self._delay.get(slot, 0.5) * 2, self.max_delay)
            self._delay[slot] = delay
            self._due[slot] = now + delay
            self.procs[slot] = None
            log.error("worker exited; restarting", hub=slot[0], slot=slot[1], exit_code=p.returncode,
                      lived_seconds=round(lived, 1), in_seconds=delay)

    def stop(self) -> None:
        running = [p for p in self.procs.values() if p is not None]
        for p in running:
            p.terminate()
        for p in running:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def run_all(settings: Settings, *, workers: int = 1, demo: bool = False, exit_after_demo: bool = False) -> int:
    topology = Topology.load(settings.topology)
    ensure_pki(settings, topology)
    counts = apply(topology, Credentials(settings.credentials), settings.mgmt_url)
    click.echo("broker setup: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    ports = {h: METRICS_BASE + n for n, h in enumerate(topology.hubs)}  # first worker of each hub
    workers_of = Supervisor(lambda h, i: start_worker(h, ports[h] if i == 0 else None),
                            [(h, i) for h in topology.hubs for i in range(workers)])
    click.echo(f"relay up: {len(workers_of.procs)} worker(s) for hubs {', '.join(topology.hubs)}; metrics on "
               f"127.0.0.1:{METRICS_BASE}-{METRICS_BASE + len(ports) - 1}; Ctrl-C stops")
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
    from adapters.sdk import AgencyClient, InboxItem
    from broker.core.edxml import Organ, build_document
    from broker.core.hoprecords import parse_record
    from broker.core.signer import SigningKey, sign
    from broker.core.trust import TrustStore
    from broker.core.validation import check

    sender, recipient = topology.agency(DEMO_FROM), topology.agency(DEMO_TO)
    key_dir = settings.pki / "agencies" / DEMO_FROM
    doc = build_document(Organ(sender.organ_id, sender.name), [Organ(recipient.organ_id, recipient.name)],
                         subject="Công văn liên thông thử nghiệm giữa hai tỉnh",
                         attachments=[("cong-van.txt", "text/plain", "Nội dung công văn.".encode())])
    signed = sign(doc, SigningKey.load(key_dir / "key.pem", key_dir / "cert.pem"))
    click.echo(f"demo: {sender.name} ({sender.organ_id}, hub {sender.hub}) -> "
               f"{recipient.name} ({recipient.organ_id}, hub {recipient.hub})")
    message_id = AgencyClient.from_settings(DEMO_FROM, settings).send(signed)
    click.echo(f"demo: sent message {message_id[:16]}...")
    inbox = AgencyClient.from_settings(DEMO_TO, settings)
    got: list[InboxItem] = []
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        inbox.fetch(lambda item: got.append(item) if item.message_id == message_id else None, wait=1.0)
    if not got:
        click.echo("demo: the document did not arrive within 60 s", err=True)
        return 1
    item = got[0]
    checked = check(item.body, trust=TrustStore.load(settings.pki), topology=topology)
    click.echo(f"demo: delivered to {DEMO_TO}; bytes unchanged: {item.body == signed}; "
               f"sender signature verifies: {checked.signature is not None}")
    for token in item.trace:
        rec = parse_record(token)
        click.echo(f"  hop {rec.hub:9} {rec.at}  {rec.verdict:9} -> {', '.join(rec.targets)}")
    return 0 if item.body == signed else 1
