"""A whole relay for integration tests: real RabbitMQ, real worker processes, isolated namespace.

Each :class:`Relay` gets its own namespace (vhosts ``<ns>.<hub>`` and users
``<ns>.…``), data directory, dev PKI and state store, so runs never see each
other's messages; :meth:`Relay.close` stops the workers and deletes the
vhosts and users it created.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from adapters.localdb import HandedOver
from adapters.sdk import AgencyClient, InboxItem
from broker.core import receipts, wire
from broker.core.delivery import DeliveryCheck
from broker.core.edxml import Organ, build_document
from broker.core.signer import SigningKey, sign
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.relay import devpki, layout
from broker.relay.amqp import blocking
from broker.relay.assemble import hub_certificates
from broker.relay.provision import Management, apply, q
from broker.relay.transport import Received
from broker.settings import Settings
from tests import services

ROOT = Path(__file__).resolve().parents[1]


def _without_secret(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def serve(app: Any, **options: Any) -> tuple[int, Any]:
    """Serve an ASGI app on a free loopback port in a background thread; returns (port, server).
    ``options`` go to uvicorn (``adapters.https.server_options`` for HTTPS).  Stop it with
    ``server.should_exit = True``."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return port, server


class Relay:
    def __init__(self, base: Path, amqp_url: str, mgmt_url: str, *, state_url: str | None = None,
                 workers: int = 1, env: dict[str, str] | None = None,
                 settings: dict[str, object] | None = None,
                 agencies: dict[str, dict[str, object]] | None = None,
                 brokers: dict[str, services.Broker] | None = None,
                 before_start: Callable[[Relay], None] | None = None) -> None:
        """``agencies``: fields added to agencies' directory entries (by code), e.g. a policy;
        ``brokers``: hubs that run on another operator's broker (hub -> that broker): each
        operator then sets up only its own hubs (``lienthong broker setup --hub``) with its own
        admin account, and each hub's worker holds only its operator's; ``before_start``: what to
        do once the relay's PKI and broker objects exist, before its workers start (revoke a
        certificate they load at start, say)."""
        self.namespace = f"lt{uuid.uuid4().hex[:8]}"
        raw = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
        for entry in raw["agencies"]:
            entry.update((agencies or {}).get(entry["organ_id"], {}))
        # the topology names each broker, never an admin's secret
        raw.update(namespace=self.namespace, amqp_url=amqp_url, management_url=_without_secret(mgmt_url))
        for entry in raw["hubs"]:
            other = (brokers or {}).get(entry["id"])
            if other is not None:
                entry.update(amqp_url=other.amqp_url, management_url=_without_secret(other.mgmt_url))
        raw["settings"] = {**(raw.get("settings") or {}), **(settings or {})}
        base.mkdir(parents=True, exist_ok=True)
        (base / "topology.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        self.topology = Topology.load(base / "topology.yaml")
        self.settings = Settings(data_dir=base / "data", topology=base / "topology.yaml", pki=base / "pki",
                                 state_url=state_url or str(base / "state"), mgmt_url=mgmt_url,
                                 transport_ca=services.transport_ca())
        devpki.init(self.settings.pki, self.topology, self.settings.transport_ca)
        self.admins = {h: brokers[h].mgmt_url if h in (brokers or {}) else mgmt_url  # type: ignore[index]
                       for h in self.topology.hubs}
        """Each hub's operator's admin account (the management URL with its secret)."""
        self.names = wire.names(self.topology)
        self.env = {**os.environ, "LIENTHONG_DATA": str(self.settings.data_dir),
                    "LIENTHONG_TRANSPORT_CA": str(self.settings.transport_ca),
                    "LIENTHONG_TOPOLOGY": str(self.settings.topology), "LIENTHONG_PKI": str(self.settings.pki),
                    "LIENTHONG_STATE_URL": self.settings.state_url, "LIENTHONG_MGMT_URL": mgmt_url,
                    "LIENTHONG_LEASE_SECONDS": "2", **(env or {})}
        if brokers:
            for hub in self.topology.hubs:  # each operator its own hubs, with its own admin account
                done = self.cli("broker", "setup", "--hub", hub, env={"LIENTHONG_MGMT_URL": self.admins[hub]})
                if done.returncode != 0:
                    raise RuntimeError(f"broker setup --hub {hub}: {done.stderr}")
        else:
            apply(self.topology, mgmt_url)
        self.logs = base / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self._keys: dict[str, SigningKey] = {}
        if before_start is not None:
            before_start(self)
        for hub in self.topology.hubs:
            for _ in range(workers):
                self.start_worker(hub)

    # -- workers -------------------------------------------------------------------------

    def start_worker(self, hub: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        n = sum(len(v) for v in self.procs.values())
        log = open(self.logs / f"{hub}-{n}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, "-m", "broker.cli", "--log-json", "hub", "run", hub, *args],
                             env={**self.env, "LIENTHONG_MGMT_URL": self.admins[hub], **env}, stdout=log,
                             stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.setdefault(hub, []).append(p)
        return p

    def stop_workers(self, hub: str) -> None:
        for p in self.procs.pop(hub, []):
            p.terminate()
            p.wait(timeout=15)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``lienthong ARGS`` as a user would, against this relay."""
        return subprocess.run([sys.executable, "-m", "broker.cli", *args], env={**self.env, **(env or {})},
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    def log_text(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.logs.glob("*.log")))

    def close(self) -> None:
        for hub in list(self.procs):
            for p in self.procs[hub]:
                p.terminate()
            for p in self.procs[hub]:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        for hub in self.topology.hubs:
            Management(self.admins[hub]).request("DELETE", f"/api/vhosts/{q(self.names.vhost(hub))}",
                                                 missing_ok=True)
        for admin in dict.fromkeys(self.admins.values()):
            m = Management(admin)
            for user in layout.users(self.topology):
                m.request("DELETE", f"/api/users/{q(user)}", missing_ok=True)

    # -- agencies ------------------------------------------------------------------------

    def client(self, organ_id: str) -> AgencyClient:
        url = self.agency_url(organ_id)
        handed = HandedOver(self.settings.data_dir / "agencies" / f"{organ_id}.sqlite3")
        trust = TrustStore.load(self.settings.pki)
        check = DeliveryCheck(trust, self.topology, hub_certificates(self.settings.pki, self.topology, trust))
        return AgencyClient(organ_id, url, handed=handed, check=check, key=self.key(organ_id))

    def agency_url(self, organ_id: str, hub: str | None = None) -> str:
        """The agency's broker account (its client certificate) on its hub's broker, or ``hub``'s."""
        return layout.account_url(self.topology, hub or self.topology.agency(organ_id).hub,
                                  self.settings.keys.agency_account(organ_id), self.settings.keys.broker_ca)

    def key(self, organ_id: str) -> SigningKey:
        """The agency's signing key (loaded once: loading checks the RSA key, about 45 ms)."""
        if organ_id not in self._keys:
            d = self.settings.pki / "agencies" / organ_id
            self._keys[organ_id] = SigningKey.load(d / "key.pem", d / "cert.pem")
        return self._keys[organ_id]

    def document(self, sender: str, recipients: list[str], *, size: int = 3000, subject: str = "Thử nghiệm",
                 signer: str | None = None) -> bytes:
        """A signed document from ``sender`` (signed by ``signer``'s key, default the sender's)."""
        doc = build_document(Organ(sender, self.topology.agency(sender).name),
                             [Organ(r, self.topology.agencies[r].name if r in self.topology.agencies else r)
                              for r in recipients],
                             subject=subject, attachments=[("a.pdf", "application/pdf", os.urandom(size))])
        return sign(doc, self.key(signer or sender))

    def take(self, organ_id: str, count: int, *, timeout: float = 30.0,
             accept: Callable[[InboxItem], bool] = lambda i: i.kind == "edxml") -> list[InboxItem]:
        """Take inbox messages until ``count`` accepted ones arrived (or time runs out); by default
        edXML messages only (hub receipts to the same inbox are taken and dropped)."""
        got: list[InboxItem] = []
        client = self.client(organ_id)
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            client.fetch(lambda item: got.append(item) if accept(item) else None, wait=0.5)
        if client.refused:  # the relay delivered something a recipient must not take: a test failure
            raise AssertionError("the recipient refused: " + "; ".join(
                f"{i.message_id[:16]} {e.line()}" for i, e in client.refused))
        return got

    def rejection(self, organ_id: str, *, timeout: float = 60.0) -> receipts.Receipt:
        """The next signed rejection receipt in ``organ_id``'s inbox (what else comes first is taken
        and dropped), its hub's signature verified."""
        told = self.take(organ_id, 1, timeout=timeout,
                         accept=lambda i: i.kind == "receipt" and receipts.read_bytes(i.body).kind == "rejected")
        assert told, f"no rejection receipt reached {organ_id}"
        return receipts.verify(told[0].body, TrustStore.load(self.settings.pki)).receipt

    # -- hub queues ----------------------------------------------------------------------

    def documents_waiting(self, organ_id: str) -> list[InboxItem]:
        """edXML messages still in the inbox (receipts left aside)."""
        return [i for i in self.client(organ_id).peek() if i.kind == "edxml"]

    def hub_url(self, hub: str) -> str:
        return layout.account_url(self.topology, hub, self.settings.keys.hub_account(hub, "hub"),
                                  self.settings.keys.broker_ca)

    def drain(self, hub: str, queue: str, *, timeout: float = 10.0, count: int = 1) -> list[Received]:
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            blocking.fetch(self.hub_url(hub), queue, lambda r: got.append(r) is None, wait=0.5)
        return got

    def depth(self, hub: str, queue: str) -> int:
        return blocking.queue_depth(self.hub_url(hub), queue)

    def lock_store(self, hub: str, seconds: float) -> threading.Thread:
        """Hold an exclusive write lock on the hub's SQLite store for ``seconds``, as another
        process would: meanwhile the store is unavailable.  Returns the thread holding it."""
        ready = threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(Path(self.settings.state_url) / f"{hub}.sqlite3", timeout=10)
            conn.execute("BEGIN EXCLUSIVE")
            ready.set()
            time.sleep(seconds)
            conn.rollback()
            conn.close()

        t = threading.Thread(target=hold, daemon=True)
        t.start()
        ready.wait(10)
        return t

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no ingress or retry queue holds a message ready (checked twice, apart)."""
        queues = [wire.Q_INGRESS] + [wire.retry_queue(t) for t, _ in layout.retry_tiers(self.topology)]
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            busy = sum(self.depth(hub, name) for hub in self.topology.hubs for name in queues)
            quiet = quiet + 1 if busy == 0 else 0
            if quiet >= 3:
                return
            time.sleep(0.3)
        raise AssertionError("the relay did not become idle")
