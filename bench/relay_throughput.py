"""Relay throughput and latency over four hubs, beside a raw pika relay through the same queues.

    python bench/relay_throughput.py [--count 2000] [--sizes 10000,100000]

Route: a commune of Nghệ An (hub H41) -> national -> H14 -> H14-D31 -> a commune of Cao Bằng.
For each size it runs, in the same broker and the same run:

- lienthong: one worker process per hub (the real `lienthong hub run`), full hop at every hub;
- raw: one process per hub that moves the same bytes through the same queues with the same
  publisher confirms and acks, and does no XML, signature, store or evidence work;
- no-receipts: lienthong with transport receipts and the audit log switched off
  (LIENTHONG_RECEIPTS=off), to show what receipts and audit cost;
- no-hold (asked for with --relays): lienthong whose receipts leave at the end of each loop turn
  (LIENTHONG_RECEIPT_HOLD_SECONDS=0), as before receipts were held to fill bundles;
- alone (asked for with --relays): lienthong whose receipts for other hubs' agencies each travel
  alone (LIENTHONG_RECEIPT_BUNDLES=off), as most do at the nation's size, where a hub's receipts
  go to many home hubs: what bundles save, on the broker and the hubs;
- no-gather (asked for with --relays): lienthong whose entry hub judges each document an agency
  hands in as it comes, even under load (LIENTHONG_ENTRY_BATCH_SECONDS=0: no batches gathered);
- raw-plain (asked for with --relays): the raw forwarders over plain AMQP on loopback (the
  broker's admin account: lienthong's own accounts cannot log in without TLS), beside raw over
  TLS with client certificates: what TLS costs the hubs' connections.  It needs a broker with a
  plain listener on 127.0.0.1:5672, which scripts/ensure-rabbitmq.sh no longer opens.

Throughput: documents pushed as fast as one publisher allows, until all arrive, with the CPU the
hubs and the broker spent per document meanwhile and until the relay was idle again (what the
documents caused: receipts, acks).  Latency: p50/p99 from publish to arrival in the inbox, with
every relay loaded at the same rate, half of lienthong's own flat-out rate (or ``--rate``), and
the CPU the hub processes and the broker used meanwhile (percent of one core; the machine has
two) and the hubs' CPU per document.  Before each measurement it waits for the broker to be
quiet.  Then each hub's CPU per document at the common rate, relay by relay (what a hop
costs beside what forwarding alone costs there).  Then the ratios the relay's speed goals are
stated in: lienthong's throughput over raw's, its p99 over raw's at the same rate, and its hub
CPU per document (receipts and audit on); lienthong's CPU per document flat out, hubs and
broker, over the hop floor (``bench/hop_path.py``'s, measured in the same run on documents of the
same size) plus raw's; and what each goal leaves on this machine beside what the two relays spent
(:func:`budgets`).
Needs a RabbitMQ with management (scripts/ensure-rabbitmq.sh); uses its own namespace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker import logs  # noqa: E402
from broker.core import wire  # noqa: E402
from broker.relay import layout  # noqa: E402
from broker.relay.amqp import blocking, params  # noqa: E402
from broker.relay.amqp.session import AmqpTransport  # noqa: E402
from broker.relay.provision import Management  # noqa: E402
from broker.relay.transport import Outgoing, Plan, Received  # noqa: E402
from tests import services  # noqa: E402
from tests.relay import Relay  # noqa: E402

T = TypeVar("T")

SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"
ROUTE = {"H41": "national", "national": "H14", "H14": "H14-D31"}
LAST = "H14-D31"


# --- the raw relay: same queues, same confirms, no work ------------------------------------

def raw_worker(hub: str, topology_path: str, data_dir: str, plain: bool = False) -> None:
    """Consume the hub's ingress, publish each message to the next hub (or the inbox), ack on confirm."""
    from broker.core.topology import Topology
    from broker.settings import Settings

    topo = Topology.load(topology_path)
    names = wire.names(topo)
    keys = Settings.from_env(data_dir=data_dir).keys
    own = layout.account_url(topo, hub, keys.hub_account(hub, "hub"), keys.broker_ca)
    if hub == LAST:
        out_url, exchange, key, user = own, wire.EX_INBOX, RECIPIENT, names.hub_user(hub)
    else:
        nxt = ROUTE[hub]
        out_url = layout.account_url(topo, nxt, keys.hub_account(hub, "link"), keys.broker_ca)
        exchange, key, user = wire.link_exchange(hub), "", names.link_user(hub)
    if plain:  # the admin account over plain AMQP on loopback (for comparison only)
        admin = urlsplit(os.environ["LIENTHONG_MGMT_URL"]).netloc.rpartition("@")[0]
        vhost_of = {h: quote(names.vhost(h), safe="") for h in topo.hubs}
        own = f"amqp://{admin}@127.0.0.1:5672/{vhost_of[hub]}"
        out_url = own if hub == LAST else f"amqp://{admin}@127.0.0.1:5672/{vhost_of[ROUTE[hub]]}"
        user = None
    RawForwarder(Plan(own, wire.Q_INGRESS, 256, {"out": out_url}), exchange, key, user or "").run()


class RawForwarder:
    """The raw relay's hub: the same transport as lienthong's workers (:class:`AmqpTransport`), and
    for each delivery one publish to the next hub and its ack once confirmed, nothing else."""

    def __init__(self, plan: Plan, exchange: str, key: str, user: str) -> None:
        self.exchange, self.key, self.user = exchange, key, user
        self.session = AmqpTransport().session(plan, self)

    def run(self) -> None:
        self.session.run()

    def ready(self) -> None:
        self.session.consumer.start()

    def link(self, name: str, up: bool, why: str) -> None:
        """A link lost is opened again by the session; the raw relay does nothing else meanwhile."""

    def lost(self, what: str, why: str) -> None:
        self.session.loop.stop()  # type: ignore[attr-defined]

    def delivered(self, r: Received) -> None:
        def confirmed(ok: bool) -> None:
            if ok:
                self.session.consumer.ack_all((r.delivery_tag,))
            else:
                self.session.consumer.requeue(r.delivery_tag)

        self.session.publishers["out"].publish(
            Outgoing(self.exchange, self.key, r.body, r.message_id, self.user, r.headers), confirmed)


# --- load and measurement --------------------------------------------------------------------

def run_load(relay: Relay, docs: list[bytes], rate: float | None) -> tuple[float, list[float]]:
    """Publish ``docs`` (at ``rate`` per second, or flat out); return (docs/s, latencies in ms)."""
    import hashlib

    sent: dict[str, float] = {}
    latencies: list[float] = []
    last_arrival = [0.0]
    done = threading.Event()
    ids = [hashlib.sha256(d).hexdigest() for d in docs]
    inbox_url = relay.client(RECIPIENT).url
    receiver_ready = threading.Event()

    def receive() -> None:
        import pika
        conn = pika.BlockingConnection(params.parameters(inbox_url))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)
        receiver_ready.set()
        n = 0
        for method, props, _body in ch.consume(wire.inbox_queue(RECIPIENT), inactivity_timeout=60):
            if method is None:
                break
            now = time.perf_counter()
            t0 = sent.get(props.message_id)
            if t0 is not None:
                latencies.append((now - t0) * 1000)
                last_arrival[0] = now
                n += 1
            ch.basic_ack(method.delivery_tag)
            if n >= len(docs):
                break
        conn.close()
        done.set()

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    receiver_ready.wait()
    import pika
    user = relay.names.agency_user(SENDER)
    conn = pika.BlockingConnection(params.parameters(relay.client(SENDER).url))
    ch = conn.channel()  # the load generator does not wait for confirms: it must not be the bottleneck
    start = time.perf_counter()
    for i, (doc, mid) in enumerate(zip(docs, ids, strict=True)):
        if rate:
            due = start + i / rate
            while (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
        sent[mid] = time.perf_counter()
        ch.basic_publish(wire.agency_exchange(SENDER), "", doc,
                         blocking.props(message_id=mid, user_id=user, headers={"lt-kind": "edxml"}))
    conn.close()
    done.wait(timeout=600)
    throughput = len(latencies) / (last_arrival[0] - start) if latencies else 0.0
    return throughput, latencies


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(timeout: float = 30.0) -> None:
    """Wait until the broker is quiet (under 10% of a core over a second): declaring a relay's
    queues, or deleting the last one's, keeps it busy for seconds, which must not load a measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(services.broker_node_pids())
        time.sleep(1.0)
        if cpu_seconds(services.broker_node_pids()) - before < 0.1:
            return


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def hub_pids(relay: Relay, procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """The hub processes of a relay: lienthong's workers or the raw forwarders."""
    return [pid for pids in pids_by_hub(relay, procs).values() for pid in pids]


def pids_by_hub(relay: Relay, procs: list[subprocess.Popen[bytes]]) -> dict[str, list[int]]:
    """The processes of each hub, in the order a document crosses them."""
    if procs:
        return {hub: [p.pid] for hub, p in zip((*ROUTE, LAST), procs, strict=True)}
    return {hub: [p.pid for p in relay.procs.get(hub, [])] for hub in (*ROUTE, LAST)}


def with_cpu(pids: list[int], work: Callable[..., T], *args: Any) -> tuple[T, float, float]:
    """Run ``work(*args)``; return its result and the CPU seconds ``pids`` and the broker used meanwhile."""
    brokers = services.broker_node_pids()
    hubs0, broker0 = cpu_seconds(pids), cpu_seconds(brokers)
    result = work(*args)
    return result, cpu_seconds(pids) - hubs0, cpu_seconds(brokers) - broker0


def flat_out(relay: Relay, docs: list[bytes]) -> float:
    """Throughput flat out; returns once the relay is idle again (receipts still on their way
    must not load the next measurement)."""
    throughput = run_load(relay, docs, None)[0]
    relay.wait_idle(timeout=300)
    return throughput


def latencies(relay: Relay, docs: list[bytes], rate: float) -> list[float]:
    return run_load(relay, docs, rate)[1]


def start(kind: str, base: Path, amqp: str, mgmt: str) -> tuple[Relay, list[subprocess.Popen[bytes]]]:
    """A relay of ``kind`` in its own namespace: lienthong's workers, or the raw forwarders."""
    env = {"no-receipts": {"LIENTHONG_RECEIPTS": "off"},
           "no-hold": {"LIENTHONG_RECEIPT_HOLD_SECONDS": "0"},
           "alone": {"LIENTHONG_RECEIPT_BUNDLES": "off"},
           "no-gather": {"LIENTHONG_ENTRY_BATCH_SECONDS": "0"}}.get(kind, {})
    raw = kind.startswith("raw")
    relay = Relay(base, amqp, mgmt, workers=0 if raw else 1, env=env)
    procs = [subprocess.Popen([sys.executable, __file__, "--raw-worker", hub, str(relay.settings.topology),
                               str(relay.settings.data_dir), "plain" if kind == "raw-plain" else "tls"], env=relay.env)
             for hub in ((*ROUTE, LAST) if raw else ())]
    return relay, procs


Ratios = tuple[float, float, float, float]
"""lienthong over raw: flat-out throughput, p99 at the common rate; lienthong's hub ms/doc there;
lienthong's CPU per document flat out over the hop floor plus raw's."""


def measure(relays: dict[str, tuple[Relay, list[subprocess.Popen[bytes]]]], size: int, count: int, raw_size: int,
            fixed_rate: float, tag: str, floor_ms: float) -> Ratios | None:
    """One round over ``relays`` in the order given: each flat out, then each at the common rate.
    Prints the round's table; returns its ratios when it measured raw and lienthong.  ``floor_ms``:
    the four hubs' hop floor per document."""
    docs = {k: [r.document(SENDER, [RECIPIENT], size=raw_size, subject=f"bench {k} {tag} {i}")
                for i in range(count + count // 2)] for k, (r, _) in relays.items()}
    flat, flat_cpu = {}, {}
    for k, (r, procs) in relays.items():
        settle()
        # CPU per document flat out, everything it caused included (receipts, acks)
        flat[k], hubs, broker = with_cpu(hub_pids(r, procs), flat_out, r, docs[k][:count])
        flat_cpu[k] = (1000 * hubs / count, 1000 * broker / count)
    # the common rate: half of lienthong's own flat-out rate (of the slowest relay without it)
    rate = fixed_rate or (flat["lienthong"] if "lienthong" in flat else min(flat.values())) / 2
    print(f"{size // 1000} KB documents, four hubs; latency and CPU at {rate:.0f} docs/s for every relay")
    print(f"{'relay':>12} {'flat docs/s':>11} {'hub/broker ms/doc':>17} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'hubs CPU%':>9} {'broker CPU%':>11} {'hub ms/doc':>10}")
    rows, per_hub, busy = {}, {}, {}
    for k, (relay, procs) in relays.items():
        settle()
        t0 = time.perf_counter()
        by_hub = pids_by_hub(relay, procs)
        each0 = {hub: cpu_seconds(pids) for hub, pids in by_hub.items()}
        lat, hubs, broker = with_cpu(hub_pids(relay, procs), latencies, relay, docs[k][count:], rate)
        wall = time.perf_counter() - t0
        per_hub[k] = {hub: 1000 * (cpu_seconds(pids) - each0[hub]) / max(1, len(lat)) for hub, pids in by_hub.items()}
        relay.wait_idle(timeout=300)
        rows[k] = (pct(lat, 50), pct(lat, 99), 1000 * hubs / max(1, len(lat)))
        busy[k] = (hubs + broker) / wall  # cores' worth
        cpu = f"{flat_cpu[k][0]:.1f} / {flat_cpu[k][1]:.1f}"
        print(f"{k:>12} {flat[k]:11.0f} {cpu:>17} {rows[k][0]:8.1f} {rows[k][1]:8.1f} "
              f"{100 * hubs / wall:9.0f} {100 * broker / wall:11.0f} {rows[k][2]:10.1f}", flush=True)
    print("hub CPU ms/doc at that rate, per hub: " + "; ".join(
        f"{k} " + " ".join(f"{hub} {ms:.2f}" for hub, ms in per_hub[k].items()) for k in per_hub))
    if "raw" not in flat or "lienthong" not in flat:
        return None
    spent, raw_spent = sum(flat_cpu["lienthong"]), sum(flat_cpu["raw"])
    ratios = (flat["lienthong"] / flat["raw"], rows["lienthong"][1] / rows["raw"][1], rows["lienthong"][2],
              spent / (floor_ms + raw_spent))
    print(f"lienthong / raw: throughput {ratios[0]:.0%}, p99 {ratios[1]:.1f}x; "
          f"lienthong hub CPU {ratios[2]:.1f} ms per document", flush=True)
    print(f"CPU per document flat out, hubs and broker: lienthong {spent:.2f} ms against the hop floor "
          f"{floor_ms:.2f} + raw {raw_spent:.2f} = {floor_ms + raw_spent:.2f} ms: {ratios[3]:.2f}x", flush=True)
    print(budgets(flat["raw"], {k: sum(v) for k, v in flat_cpu.items()}, rate, rows, busy), flush=True)
    return ratios


def budgets(raw_flat: float, flat_ms: dict[str, float], rate: float,
            rows: dict[str, tuple[float, float, float]], busy: dict[str, float]) -> str:
    """What each goal leaves on this machine, beside what each relay spent in the same round.
    Flat out both relays keep every core busy, so 30% of raw's throughput leaves the cores' time
    over that rate for each document, hubs and broker together.  ``rows``: p50, p99 and hub ms/doc
    at ``rate``; ``busy``: the cores' worth of CPU hubs and broker used there."""
    cores = os.cpu_count() or 1
    return (f"goals on this machine ({cores} cores): 30% of raw's throughput leaves "
            f"{cores * 1000 / (0.3 * raw_flat):.1f} ms of CPU per document flat out (raw used {flat_ms['raw']:.1f}, "
            f"lienthong {flat_ms['lienthong']:.1f}); 4 ms of hub CPU at {rate:.0f} docs/s, where raw's forwarders "
            f"alone used {rows['raw'][2]:.1f} (lienthong {rows['lienthong'][2]:.1f}); p99 within "
            f"{2 * rows['raw'][1]:.0f} ms (lienthong {rows['lienthong'][1]:.0f}), the cores "
            f"{busy['raw'] / cores:.0%} busy for raw, {busy['lienthong'] / cores:.0%} for lienthong")


def hop_floor_ms(where: Path, attachment: int) -> float:
    """The four hubs' hop floor per document, ms (``bench/hop_path.py``), for documents whose
    attachment has ``attachment`` bytes, their receipts in bundles of 8."""
    from bench.hop_path import floor_us
    from bench.trace_check import Hubs

    return sum(floor_us(Hubs.make(where), bundle=8, attachment=attachment).values()) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--relays", default="raw,no-receipts,lienthong",
                    help="raw: pika forwarders; no-receipts: lienthong without receipts and audit; "
                         "no-hold: lienthong with receipts bundled per loop turn only; alone: lienthong with "
                         "each receipt for another hub alone; no-gather: lienthong "
                         "judging each agency document as it comes; lienthong: all")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="the common rate in docs/s (default: half of lienthong's flat-out rate in this run); "
                         "fixed, it compares CPU per document between runs")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds on the same relays, every other one in the reverse order (the relay measured "
                         "second tends to meet a slower broker), each with the sender's inbox emptied of the "
                         "last round's receipts; the medians of the ratios close the output")
    ap.add_argument("--raw-worker", nargs=4, metavar=("HUB", "TOPOLOGY", "DATA", "PLAIN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_worker:
        raw_worker(*args.raw_worker[:3], plain=args.raw_worker[3] == "plain")
        return
    logs.configure(level="WARNING")
    amqp, mgmt = services.broker_urls()
    kinds = args.relays.split(",")
    if "raw-plain" in kinds and not services.answers("amqp://127.0.0.1:5672/", 5672):
        sys.exit("raw-plain needs plain AMQP on 127.0.0.1:5672; this broker has no plain listener "
                 "(scripts/ensure-rabbitmq.sh: no account may use one)")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            count = args.count if size <= 20_000 else max(200, args.count // 4)
            raw_size = max(100, (size - 2600) * 3 // 4)  # base64 grows by 4/3; ~2.6 kB of header
            floor_ms = hop_floor_ms(Path(tmp) / f"floor-{size}", raw_size)
            relays = {k: start(k, Path(tmp) / f"{k}-{size}", amqp, mgmt) for k in kinds}
            try:
                time.sleep(2)  # the workers connect
                found = []
                for round_ in range(args.repeat):
                    order = kinds if round_ % 2 == 0 else kinds[::-1]
                    if round_:  # the receipts the last round left in the sender's inbox: this one starts empty
                        for relay, _ in relays.values():
                            vhost = quote(relay.names.vhost(relay.topology.agency(SENDER).hub), safe="")
                            Management(mgmt).request("DELETE", f"/api/queues/{vhost}/"
                                                     f"{quote(wire.inbox_queue(SENDER), safe='')}/contents")
                    ratios = measure({k: relays[k] for k in order}, size, count, raw_size, args.rate, str(round_),
                                     floor_ms)
                    if ratios is not None:
                        found.append(ratios)
                if len(found) > 1:
                    med = [statistics.median(r[i] for r in found) for i in range(4)]
                    print(f"median of {len(found)} rounds: lienthong / raw: throughput {med[0]:.0%}, "
                          f"p99 {med[1]:.1f}x; lienthong hub CPU {med[2]:.1f} ms per document; "
                          f"CPU per document over the floor plus raw's {med[3]:.2f}x", flush=True)
            finally:
                for relay, procs in relays.values():
                    for p in procs:
                        p.terminate()
                    relay.close()


if __name__ == "__main__":
    main()
