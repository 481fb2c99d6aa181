"""The fault-injection suite: a stream of signed documents through four hubs while things break.
CI runs its short form (tests/test_chaos.py); ``bench/faults.py`` runs it by hand, long or as a soak.

A commune of Nghệ An (hub H41) sends documents to a commune of Cao Bằng (H41 -> national -> H14 ->
H14-D31) and to a neighbouring commune on H41 whose reader is slow.  Meanwhile, at random moments
(seeded): hub workers are killed with SIGKILL and restarted, RabbitMQ is restarted
(``rabbitmqctl stop_app`` / ``start_app``), a hub's state store is locked, and a department sends
poison messages (malformed, entity bomb, unsigned, signed by someone else, unknown recipient).

At the end every document is accounted for: each good one delivered to its recipient's SDK exactly
once, each poison one answered by a signed rejection with its code.  Parked RETRY_EXHAUSTED
messages are replayed as an operator would (and counted).  Exit status 1 if anything is lost,
duplicated, unanswered, or a worker died on its own.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.sdk import AgencyClient, InboxItem
from broker.core import receipts, wire
from broker.core.edxml import Organ, build_document
from broker.core.errors import LienthongError
from broker.core.parsing import parse
from broker.core.trust import TrustStore
from broker.ops import queues
from broker.relay import layout
from broker.relay.amqp import blocking
from tests import services
from tests.relay import Relay

SENDER, FAR, SLOW, POISONER = "000.00.51.H41", "001.00.31.H14", "000.00.52.H41", "000.00.01.H41"
HUBS = ("H41", "national", "H14", "H14-D31")
ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"


def cluster_urls() -> tuple[str, str]:
    """(AMQP URLs of the three nodes, management URL of node 3) from scripts/rabbitmq-cluster.sh."""
    out = subprocess.run([str(CLUSTER_SCRIPT), "urls"], check=True, capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return values["LIENTHONG_CLUSTER_AMQP"].strip('"'), values["LIENTHONG_CLUSTER_MGMT"].strip('"')


@dataclass
class Plan:
    seconds: float = 40.0
    rate: float = 15.0
    """Good documents per second."""
    size: int = 3000
    kill_every: float = 6.0
    """One SIGKILL of a hub worker per this many seconds (at random moments; at least 2; 0: none)."""
    broker_restarts: int = 1
    store_outages: int = 2
    poison_every: float = 3.0
    slow_delay: float = 0.05
    """Seconds the slow recipient spends on each document."""
    seed: int = 20261122
    soak: bool = False
    """No faults: measure memory and latency over time."""
    cluster: str = ""
    """On a RabbitMQ cluster run by scripts/rabbitmq-cluster.sh: stop its first node mid-run (the node the
    relay's clients prefer), start it again later."""
    drain_seconds: float = 120.0


@dataclass
class Result:
    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    poison_sent: int = 0
    poison_rejected: int = 0
    poison_unanswered: int = 0
    poison_wrong_code: list[str] = field(default_factory=list)
    raw_twins: int = 0
    kills: int = 0
    broker_restarts: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    store_outages: int = 0
    node_stops: int = 0
    replayed_from_parking: int = 0
    crashed_workers: int = 0
    worker_tracebacks: int = 0
    connections_lost: int = 0
    """Worker connections the faults broke (each one re-established)."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p99_near_faults_ms: float = 0.0
    windows: list[dict[str, float]] = field(default_factory=list)
    rss_start_mb: dict[str, float] = field(default_factory=dict)
    rss_end_mb: dict[str, float] = field(default_factory=dict)
    memory: list[dict[str, float]] = field(default_factory=list)
    """Samples while sending: seconds, the four workers' RSS summed, the broker's (beam.smp) RSS."""
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    """For each document not delivered: the last hub that recorded it and where it was last seen."""

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.poison_unanswered == 0
                and not self.poison_wrong_code and self.crashed_workers == 0 and self.worker_tracebacks == 0)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _broker_rss_mb() -> float:
    """RSS of the RabbitMQ node(s) on this machine."""
    return sum(_rss_mb(pid) for pid in services.broker_node_pids())


class Suite:
    def __init__(self, relay: Relay, plan: Plan, say: Any = print) -> None:
        self.relay = relay
        self.plan = plan
        self.say = say
        self.rng = random.Random(plan.seed)
        self.result = Result()
        self.stop = threading.Event()
        self.sending_done = threading.Event()
        self.lock = threading.Lock()
        self.sent_at: dict[str, float] = {}
        self.expect: dict[str, str] = {}           # good digest -> recipient
        self.got: dict[str, int] = {}              # good digest -> times handed to the recipient
        self.got_at: dict[str, float] = {}
        self.poison: dict[str, str] = {}           # poison digest -> expected code
        self.answered: dict[str, str] = {}         # poison digest -> code in the signed rejection
        self.fault_times: list[float] = []
        self.killed: set[int] = set()
        self.clients: list[AgencyClient] = []
        self.watchers: list[threading.Thread] = []
        self.trust = TrustStore.load(relay.settings.pki)

    # -- traffic ---------------------------------------------------------------------------

    def _send(self, client: AgencyClient, body: bytes) -> None:
        """Send like a DMS would: retry while the broker is away (the hub drops a resent twin)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                client.send(body)
                return
            except LienthongError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def sender(self) -> None:
        client = self.relay.client(SENDER)
        self.clients.append(client)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.plan.seconds:
            to = FAR if n % 3 else SLOW
            doc = self.relay.document(SENDER, [to], size=self.plan.size, subject=f"tải {n}")
            digest = hashlib.sha256(doc).hexdigest()
            with self.lock:
                self.expect[digest] = to
                self.sent_at[digest] = time.time()
            self._send(client, doc)
            n += 1
            pause = start + n / self.plan.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.result.sent = n
        self.sending_done.set()

    def poisoner(self) -> None:
        client = self.relay.client(POISONER)
        self.clients.append(client)
        topo = self.relay.topology
        kinds = [
            ("XML_MALFORMED", lambda i: b"<edXMLEnvelope><unclosed " + str(i).encode()),
            ("XML_FORBIDDEN", lambda i: b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "' + b"y" * 10
             + b'"><!ENTITY z "&x;&x;&x;">]><a n="' + str(i).encode() + b'">&z;</a>'),
            ("SIG_MISSING", lambda i: build_document(Organ(POISONER, topo.agencies[POISONER].name), [Organ(SLOW)],
                                                     subject=f"chưa ký {i}")),
            ("SIGNER_MISMATCH", lambda i: self.relay.document(POISONER, [SLOW], signer=SENDER,
                                                              subject=f"ký hộ {i}")),
            ("RECIPIENT_UNKNOWN", lambda i: self.relay.document(POISONER, ["999.99.99.H99"],
                                                                subject=f"không nơi nhận {i}")),
        ]
        i = 0
        rng = random.Random(self.plan.seed + 1)  # its own: the fault schedule stays the same
        while not self.sending_done.wait(rng.expovariate(1 / self.plan.poison_every)):
            code, make = kinds[i % len(kinds)]
            body = make(i)
            with self.lock:
                self.poison[hashlib.sha256(body).hexdigest()] = code
            self._send(client, body)
            i += 1
        self.result.poison_sent = len(self.poison)

    def reader(self, organ_id: str, delay: float) -> None:
        client = self.relay.client(organ_id)
        self.clients.append(client)

        def handle(item: InboxItem) -> None:
            if item.kind != "edxml":
                return
            digest = hashlib.sha256(item.body).hexdigest()
            if delay:
                time.sleep(delay)
            with self.lock:
                if self.expect.get(digest) == organ_id:
                    self.got[digest] = self.got.get(digest, 0) + 1
                    self.got_at.setdefault(digest, time.time())

        while not self.stop.is_set():
            try:
                client.fetch(handle, limit=200, wait=0.5)
            except LienthongError:
                time.sleep(0.5)

    def receipts(self, organ_id: str) -> None:
        """The sender's and the poisoner's inboxes: hub receipts (rejections verified)."""
        client = self.relay.client(organ_id)
        self.clients.append(client)

        def handle(item: InboxItem) -> None:
            if item.kind != "receipt":
                return
            r = receipts.read(parse(item.body))
            if r.kind == "rejected":
                receipts.verify(item.body, self.trust)  # signed by a hub we trust
                with self.lock:
                    self.answered.setdefault(r.document_sha256, r.code)

        while not self.stop.is_set():
            try:
                client.fetch(handle, limit=500, wait=0.5)
            except LienthongError:
                time.sleep(0.5)

    # -- faults ----------------------------------------------------------------------------

    def _worker(self, hub: str) -> subprocess.Popen[bytes]:
        return self.relay.procs[hub][-1]

    def kill(self) -> None:
        hub = self.rng.choice(HUBS)
        p = self._worker(hub)
        self.killed.add(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        self.say(f"  t={self._t():5.1f}s SIGKILL worker of {hub}")
        time.sleep(self.rng.uniform(0.2, 1.5))
        self.relay.start_worker(hub)
        self.result.kills += 1

    def restart_broker(self) -> None:
        self.say(f"  t={self._t():5.1f}s rabbitmqctl stop_app")
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=120)
        time.sleep(2)
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True, timeout=120)
        up = time.time()
        self.say(f"  t={self._t():5.1f}s broker back")
        self.result.broker_restarts += 1
        watch = threading.Thread(target=self._recovery, args=(up,), daemon=True)
        watch.start()
        self.watchers.append(watch)

    def stop_node(self) -> None:
        """Stop cluster node 1 for a while, then start it again (it rejoins)."""
        script = self.plan.cluster
        self.say(f"  t={self._t():5.1f}s cluster node 1 stopped")
        subprocess.run([script, "stop-node", "1"], check=True, capture_output=True, timeout=120)
        self.result.node_stops += 1
        down = time.time()
        watch = threading.Thread(target=self._recovery, args=(down,), daemon=True)
        watch.start()
        self.watchers.append(watch)
        time.sleep(max(5.0, self.plan.seconds / 4))
        subprocess.run([script, "start-node", "1"], check=True, capture_output=True, timeout=300)
        self.say(f"  t={self._t():5.1f}s cluster node 1 back")

    def _recovery(self, up: float) -> None:
        """Seconds from the broker's return until a document sent after it is delivered."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with self.lock:
                after = [self.got_at[d] for d, t in self.sent_at.items() if t >= up and d in self.got_at]
            if after:
                self.result.recovery_seconds.append(round(min(after) - up, 2))
                return
            time.sleep(0.1)

    def lock_store(self) -> None:
        hub = self.rng.choice(HUBS)
        seconds = self.rng.uniform(0.5, 2.0)
        path = Path(self.relay.settings.state_url) / f"{hub}.sqlite3"
        conn = sqlite3.connect(path, timeout=10)
        conn.execute("BEGIN EXCLUSIVE")
        self.say(f"  t={self._t():5.1f}s state store of {hub} locked for {seconds:.1f}s")
        time.sleep(seconds)
        conn.rollback()
        conn.close()
        self.result.store_outages += 1

    def _t(self) -> float:
        return time.monotonic() - self.t0

    def memory(self) -> None:
        """Sample memory a dozen times over the sending (at least every 5 s)."""
        every = max(5.0, self.plan.seconds / 12)
        while True:
            workers = sum(_rss_mb(self._worker(h).pid) for h in HUBS)
            self.result.memory.append({"t_s": round(self._t()), "workers_mb": round(workers, 1),
                                       "broker_mb": round(_broker_rss_mb(), 1)})
            if self.sending_done.wait(every):
                return

    def faults(self) -> None:
        plan, end = self.plan, self.plan.seconds - 3
        kills = max(2, int(end / plan.kill_every)) if plan.kill_every else 0
        events = [(self.rng.uniform(2, end), "kill") for _ in range(kills)]
        # restarts in the first two thirds, so documents sent after them show the recovery
        events += [(self.rng.uniform(5, max(6.0, end * 2 / 3)), "broker") for _ in range(plan.broker_restarts)]
        events += [(self.rng.uniform(3, end), "store") for _ in range(plan.store_outages)]
        if plan.cluster:
            events.append((plan.seconds / 4, "node"))
        for at, what in sorted(events):
            if self.stop.wait(max(0.0, at - self._t())):
                return
            self.fault_times.append(time.time())
            act = {"kill": self.kill, "broker": self.restart_broker, "store": self.lock_store,
                   "node": self.stop_node}[what]
            if what == "node":  # runs alongside the other faults
                th = threading.Thread(target=act, daemon=True)
                th.start()
                self.watchers.append(th)
            else:
                act()

    # -- run -------------------------------------------------------------------------------

    def run(self) -> Result:
        plan, res = self.plan, self.result
        self.relay.take(FAR, 1, timeout=3)  # settle: every worker has connected
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        threads = [threading.Thread(target=self.sender, daemon=True),
                   threading.Thread(target=self.reader, args=(FAR, 0.0), daemon=True),
                   threading.Thread(target=self.reader, args=(SLOW, plan.slow_delay), daemon=True),
                   threading.Thread(target=self.receipts, args=(SENDER,), daemon=True),
                   threading.Thread(target=self.memory, daemon=True)]
        if not plan.soak:
            threads += [threading.Thread(target=self.poisoner, daemon=True),
                        threading.Thread(target=self.receipts, args=(POISONER,), daemon=True),
                        threading.Thread(target=self.faults, daemon=True)]
        for th in threads:
            th.start()
        time.sleep(min(5.0, plan.seconds / 4))
        res.rss_start_mb = {h: round(_rss_mb(self._worker(h).pid), 1) for h in HUBS}
        windows = max(1, int(plan.seconds // 300)) if plan.soak else 1
        self.sending_done.wait()
        self.say(f"  t={self._t():5.1f}s sending done ({res.sent} documents); draining")
        res.rss_end_mb = {h: round(_rss_mb(self._worker(h).pid), 1) for h in HUBS}
        self._drain()
        self.stop.set()
        for th in threads + self.watchers:
            th.join(timeout=30)
        self._account(windows)
        res.seconds = round(self._t(), 1)
        for c in self.clients:
            c.close()
        return res

    def _missing(self) -> tuple[int, int]:
        with self.lock:
            good = sum(1 for d in self.expect if d not in self.got)
            bad = sum(1 for d in self.poison if d not in self.answered)
        return good, bad

    def _drain(self) -> None:
        deadline = time.monotonic() + self.plan.drain_seconds
        replayed = False
        while time.monotonic() < deadline:
            good, bad = self._missing()
            if good == bad == 0:
                return
            if not replayed and time.monotonic() > deadline - self.plan.drain_seconds / 2:
                # what the store outages parked after the last retry tier: an operator replays it
                for hub in HUBS:
                    self.result.replayed_from_parking += queues.replay(
                        self.relay.settings, hub, lambda p: p.code == "RETRY_EXHAUSTED")
                replayed = True
            time.sleep(0.5)
        good, bad = self._missing()
        self.say(f"  drain timed out: {good} document(s) and {bad} poison message(s) unaccounted for")

    def _account(self, windows: int) -> None:
        res = self.result
        with self.lock:
            res.delivered = sum(1 for d in self.expect if d in self.got)
            res.duplicated = sum(n - 1 for n in self.got.values())
            res.lost = len(self.expect) - res.delivered
            res.poison_rejected = sum(1 for d, code in self.poison.items() if self.answered.get(d) == code)
            res.poison_unanswered = sum(1 for d in self.poison if d not in self.answered)
            res.poison_wrong_code = sorted(f"{code} answered {self.answered[d]}" for d, code in self.poison.items()
                                           if d in self.answered and self.answered[d] != code)
            lat = {d: self.got_at[d] - self.sent_at[d] for d in self.got_at}
        res.raw_twins = sum(c.twins for c in self.clients)
        res.p50_ms = round(1000 * _pct(list(lat.values()), 0.50), 1)
        res.p99_ms = round(1000 * _pct(list(lat.values()), 0.99), 1)
        near = [v for d, v in lat.items() if any(0 <= self.sent_at[d] - f <= 10 for f in self.fault_times)]
        res.p99_near_faults_ms = round(1000 * _pct(near, 0.99), 1)
        if lat:
            t_first = min(self.sent_at.values())
            span = (max(self.sent_at.values()) - t_first) / windows + 1e-9
            for w in range(windows):
                vals = [v for d, v in lat.items() if w <= (self.sent_at[d] - t_first) / span < w + 1]
                res.windows.append({"from_s": round(w * span), "p50_ms": round(1000 * _pct(vals, 0.5), 1),
                                    "p99_ms": round(1000 * _pct(vals, 0.99), 1), "n": len(vals)})
        for procs in self.relay.procs.values():
            for p in procs:
                if p.poll() is not None and p.pid not in self.killed:
                    res.crashed_workers += 1
        if res.lost:
            res.missing = self.explain([d for d in self.expect if d not in self.got])
        logs = self.relay.log_text()
        res.worker_tracebacks = logs.count("Traceback")
        res.connections_lost = logs.count('"event": "connection lost"')


    def explain(self, digests: list[str]) -> list[str]:
        """Where each missing document got to: the furthest hub on its path whose state store
        recorded it (with its claims), and every queue of the relay that still holds it."""
        held: dict[str, list[str]] = {}
        for hub in HUBS:
            names = [wire.Q_INGRESS, wire.Q_PARKING, wire.Q_UNROUTABLE,
                      *(wire.retry_queue(t) for t, _ in layout.retry_tiers(self.relay.topology)),
                      *(wire.inbox_queue(a.organ_id) for a in self.relay.topology.agencies.values()
                        if a.hub == hub)]
            for queue in names:
                def seen(r: Any, where: str = f"{hub}/{queue}") -> bool:
                    held.setdefault(r.message_id, []).append(where)
                    return False  # look, do not take
                try:
                    blocking.fetch(self.relay.hub_url(hub), queue, seen, limit=10_000)
                except LienthongError as exc:
                    held.setdefault("?", []).append(f"{hub}/{queue}: {exc}")
        out = []
        for digest in digests:
            path = ("H41",) if self.expect[digest] == SLOW else HUBS
            recorded = "recorded by no hub"
            for hub in path:
                db = Path(self.relay.settings.state_url) / f"{hub}.sqlite3"
                if not db.exists():
                    continue
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                try:
                    claims = conn.execute("SELECT target, state FROM hops WHERE digest = ?", (digest,)).fetchall()
                    verdict = conn.execute("SELECT verdict, code FROM verdicts WHERE digest = ?", (digest,)).fetchone()
                finally:
                    conn.close()
                if claims or verdict:
                    recorded = (f"last recorded by {hub} (verdict {verdict[0] if verdict else '-'}"
                                f"{' ' + verdict[1] if verdict and verdict[1] else ''}; claims "
                                f"{', '.join(f'{t}={st}' for t, st in claims) or 'none'})")
            where = ", ".join(held.get(digest, [])) or "in no queue of the relay"
            sent = self.sent_at[digest] - self.t0_wall
            out.append(f"{digest[:16]} to {self.expect[digest]} sent at t={sent:.1f}s: {recorded}; "
                       f"now {where}")
        return out


def run(plan: Plan, base: Path, amqp_url: str, mgmt_url: str, say: Any = print) -> Result:
    relay = Relay(base, amqp_url, mgmt_url, env={"LIENTHONG_SQLITE_TIMEOUT": "0.5"},
                  settings={"retry_tiers_ms": [500, 2000, 5000]})
    try:
        return Suite(relay, plan, say).run()
    finally:
        relay.close()


def report(res: Result) -> str:
    lines = [
        f"documents sent       {res.sent}",
        f"delivered once       {res.delivered}",
        f"duplicated           {res.duplicated}   (twins dropped by the SDK by message id: {res.raw_twins})",
        f"lost                 {res.lost}",
        f"poison sent          {res.poison_sent}   rejected with a signed receipt and the right code: "
        f"{res.poison_rejected}, unanswered: {res.poison_unanswered}, wrong code: {len(res.poison_wrong_code)}",
        f"SIGKILLs survived    {res.kills}",
        f"broker restarts      {res.broker_restarts}   recovery (to the first new delivery, per restart "
        f"or node stop): "
        f"{', '.join(f'{s:.1f} s' for s in res.recovery_seconds) or '-'}",
        f"store outages        {res.store_outages}   replayed from parking by the operator: "
        f"{res.replayed_from_parking}",
        f"cluster node stops   {res.node_stops}",
        f"workers crashed      {res.crashed_workers}   tracebacks in worker logs: {res.worker_tracebacks}   "
        f"connections lost and re-made: {res.connections_lost}",
        f"latency              p50 {res.p50_ms} ms, p99 {res.p99_ms} ms, p99 within 10 s of a fault "
        f"{res.p99_near_faults_ms} ms",
        f"worker RSS (MB)      start {res.rss_start_mb}  end {res.rss_end_mb}",
    ]
    if res.memory:
        lines.append("memory (MB)          " + "; ".join(
            f"{m['t_s']:.0f}s: workers {m['workers_mb']:.0f} broker {m['broker_mb']:.0f}" for m in res.memory))
    if len(res.windows) > 1:
        lines.append("latency by window    " + "; ".join(
            f"{w['from_s']:.0f}s: p50 {w['p50_ms']} p99 {w['p99_ms']} (n={w['n']:.0f})" for w in res.windows))
    lines += [f"missing              {m}" for m in res.missing]
    lines.append(f"elapsed              {res.seconds} s   verdict: {'PASS' if res.ok else 'FAIL'}")
    return "\n".join(lines)
