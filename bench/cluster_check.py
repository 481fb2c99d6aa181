"""A quorum queue on the three-node cluster of scripts/rabbitmq-cluster.sh keeps every confirmed
message while a node is shut down.

    python bench/cluster_check.py                  # both scenarios, the node shut down (stop-node)
    python bench/cluster_check.py --crash          # the same, the node's Erlang VM killed (SIGKILL)
    python bench/cluster_check.py --scenario follower --messages 2000 --rate 70

Scenario "follower": publish through node 1 (the queue's leader, as it was declared there) while
node 2 is shut down midway.  Scenario "publisher": publish through node 1 while node 1 itself is
shut down midway; the publisher holds the list of all three nodes, reconnects to the first that
answers and publishes again the message whose confirm it never got.  A nacked publish is
repeated, on a new channel after --nack-limit nacks in a row (see the comment in exercise()).

Each message is persistent, carries its number as message_id and is published with publisher
confirms (one at a time: basic_publish returns once the broker confirms), paced (--rate) so that
the node goes down while the second half is still being published.  After the publishing,
everything is consumed through node 3 and counted; the stopped node is started again and the
cluster must show three running nodes.  Exit status 1 if a confirmed message is missing, if a
message arrives twice that was published once, or if the cluster does not come back.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.relay.amqp import params as amqp_params  # noqa: E402

SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
DIR = Path(os.environ.get("LIENTHONG_CLUSTER_DIR", "/tmp/lienthong-cluster"))
# a dropped connection, a node that refuses or closes it, a channel closed under us
LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed,
        pika.exceptions.ChannelClosed, pika.exceptions.ChannelWrongStateError, OSError)


@dataclass
class Result:
    scenario: str
    stopped_node: int
    how: str                    # "shutdown" (stop-node) or "SIGKILL"
    published: int = 0          # distinct messages handed to basic_publish
    attempts: int = 0           # publish calls, with the ones repeated after a lost connection
    confirmed: int = 0
    republished: list[int] = field(default_factory=list)   # in doubt: published again
    reconnects: int = 0
    nacked: int = 0             # publishes the broker refused (nack or returned), then repeated
    channel_reopens: int = 0
    reconnect_ports: list[int] = field(default_factory=list)
    consumed: int = 0
    lost: list[int] = field(default_factory=list)
    duplicated: dict[int, int] = field(default_factory=dict)
    unexpected_duplicates: list[int] = field(default_factory=list)
    stop_seconds: float = 0.0           # how long `stop-node` (or the kill) took
    port_closed_seconds: float = 0.0    # from the stop until the node's AMQP port refused
    after_stop: int = 0                 # messages confirmed after the node's port refused
    stall_seconds: float = 0.0          # longest wait for a confirm from the stop on (from the
                                        # message's first attempt, through reconnects and retries)
    baseline_ms: float = 0.0            # median confirm wait before the stop
    publish_seconds: float = 0.0
    leader_before: str = ""
    leader_after: str = ""
    running_after_restart: int = 0
    restart_seconds: float = 0.0

    def ok(self) -> bool:
        return (not self.lost and not self.unexpected_duplicates and self.confirmed == self.published
                and self.running_after_restart == 3)

    def report(self) -> str:
        dup = sum(n - 1 for n in self.duplicated.values())
        lines = [
            f"scenario {self.scenario}: node lt{self.stopped_node} stopped ({self.how}) while publishing",
            f"  published {self.published} ({self.attempts} publish calls), confirmed {self.confirmed}, "
            f"consumed {self.consumed}",
            f"  lost {len(self.lost)}{' ' + str(self.lost[:20]) if self.lost else ''}, "
            f"duplicated {dup}{' ' + str(sorted(self.duplicated)[:20]) if self.duplicated else ''}"
            f" (messages published again: {len(set(self.republished))}"
            f"{' ' + str(sorted(set(self.republished))[:20]) if self.republished else ''}; duplicates of messages"
            f" published once: {len(self.unexpected_duplicates)})",
            f"  refused by the broker (nack) and published again {self.nacked}, on a new channel"
            f" {self.channel_reopens} times; reconnections {self.reconnects}"
            f"{' to ports ' + str(self.reconnect_ports) if self.reconnect_ports else ''}",
            f"  {'stop-node' if self.how == 'shutdown' else 'the kill'} took {self.stop_seconds:.1f} s,"
            f" the node's AMQP port refused after {self.port_closed_seconds:.1f} s;"
            f" {self.after_stop} messages confirmed after that",
            f"  publisher stalled {self.stall_seconds:.2f} s at most around the stop "
            f"(median confirm wait before it {self.baseline_ms:.1f} ms); publishing took "
            f"{self.publish_seconds:.1f} s",
            f"  queue leader {self.leader_before or '?'} -> {self.leader_after or '?'}",
            f"  start-node took {self.restart_seconds:.1f} s; running nodes afterwards: "
            f"{self.running_after_restart}",
            f"  {'OK' if self.ok() else 'FAILED'}",
        ]
        return "\n".join(lines)


def cluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], check=check, capture_output=True, text=True, timeout=600)


def urls() -> tuple[list[str], str]:
    """The nodes' AMQP URLs (TLS, the admin account of the management URL, default vhost) and the
    management URL of node 3."""
    values = dict(line.split("=", 1) for line in cluster("urls").stdout.splitlines() if "=" in line)
    mgmt = values["LIENTHONG_CLUSTER_MGMT"].strip('"')
    admin = urllib.parse.urlsplit(mgmt).netloc.rpartition("@")[0]
    ca = os.path.join(os.environ.get("LIENTHONG_TRANSPORT_CA", "/var/lib/lienthong/transport-ca"), "ca.pem")
    nodes = [u.replace("amqps://", f"amqps://{admin}@") + f"?cacertfile={urllib.parse.quote(ca, safe='')}"
             for u in values["LIENTHONG_CLUSTER_AMQP"].strip('"').split()]
    return nodes, mgmt


def running_nodes(node: int) -> int:
    out = subprocess.run(["rabbitmqctl", "-q", "-n", f"lt{node}@localhost", "cluster_status",
                          "--formatter", "json"], capture_output=True, text=True, timeout=60)
    try:
        return len(json.loads(out.stdout).get("running_nodes", []))
    except ValueError:
        return 0


def params(url: str) -> pika.URLParameters:
    p = amqp_params.parameters(url)[0]
    p.connection_attempts = 1
    p.socket_timeout = 5
    p.heartbeat = 30
    p.blocked_connection_timeout = 60
    return p


def leader(mgmt_urls: list[str], queue: str) -> str:
    """The queue's leader as the management API of the first node that answers reports it."""
    for mgmt in mgmt_urls:
        p = urllib.parse.urlsplit(mgmt)
        auth = base64.b64encode(f"{p.username}:{p.password}".encode()).decode()
        url = f"{p.scheme}://{p.hostname}:{p.port}/api/queues/%2F/{urllib.parse.quote(queue, safe='')}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Basic " + auth}),
                                        timeout=5) as resp:
                return str(json.load(resp).get("leader", ""))
        except (OSError, ValueError):
            continue
    return ""


class Publisher:
    """A confirming publisher on the first node of ``nodes`` that answers."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        self.conn: pika.BlockingConnection | None = None
        self.ch: Any = None
        self.port = 0

    def connect(self, deadline: float) -> None:
        while True:
            try:
                # pika tries the parameters in order and keeps the first connection that succeeds
                self.conn = pika.BlockingConnection([params(u) for u in self.nodes])
                self.ch = self.conn.channel()
                self.ch.confirm_delivery()
                self.port = self.conn._impl.params.port
                return
            except LOST:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def reopen_channel(self) -> None:
        """A new channel on the same connection (the old one keeps refusing, see run())."""
        assert self.conn is not None
        try:
            self.ch.close()
        except LOST:
            pass
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def publish(self, queue: str, n: int) -> None:
        assert self.ch is not None
        self.ch.basic_publish("", queue, f"message {n}".encode(), mandatory=True,
                              properties=pika.BasicProperties(delivery_mode=2, message_id=str(n)))

    def close(self) -> None:
        try:
            if self.conn is not None and self.conn.is_open:
                self.conn.close()
        except LOST:
            pass


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Stopper(threading.Thread):
    """Stops node ``n`` (``scripts/rabbitmq-cluster.sh stop-node``, or SIGKILL to its Erlang VM) and
    notes when the command returned and when the node's AMQP port first refused a connection."""

    def __init__(self, n: int, crash: bool) -> None:
        super().__init__(daemon=True)
        self.n, self.crash = n, crash
        self.t0 = self.t_done = self.t_closed = 0.0
        self.error = ""

    def run(self) -> None:
        self.t0 = time.monotonic()
        watch = threading.Thread(target=self._watch, daemon=True)
        watch.start()
        if self.crash:
            pid = int((DIR / f"lt{self.n}" / "pid").read_text().strip())
            # the node name is in the VM's environment, not on its command line
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RABBITMQ_NODENAME=lt{self.n}@localhost".encode() not in env:
                self.error = f"pid {pid} is not node lt{self.n}'s Erlang VM"
                return
            os.kill(pid, signal.SIGKILL)
        else:
            subprocess.run([str(SCRIPT), "stop-node", str(self.n)], capture_output=True, timeout=300)
        self.t_done = time.monotonic()
        watch.join(timeout=60)

    def _watch(self) -> None:
        while port_open(5680 + self.n) and not self.error:
            time.sleep(0.05)
        self.t_closed = time.monotonic()


def run(scenario: str, messages: int, rate: float, crash: bool, nack_limit: int, give_up: float,
        amqp: list[str], mgmt: str, say: Callable[[str], None]) -> Result:
    """One scenario on a fresh quorum queue; the queue is deleted and the stopped node started again
    whatever happens."""
    stopped = 2 if scenario == "follower" else 1
    res = Result(scenario, stopped, "SIGKILL" if crash else "shutdown")
    queue = f"cluster-check-{scenario}-{uuid.uuid4().hex[:8]}"
    decl = pika.BlockingConnection(params(amqp[0]))
    decl.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    decl.close()
    try:
        exercise(res, queue, messages, rate, crash, nack_limit, give_up, amqp, mgmt, say)
    finally:
        try:
            conn = pika.BlockingConnection(params(amqp[2]))
            conn.channel().queue_delete(queue)
            conn.close()
        except LOST as exc:
            say(f"{scenario}: could not delete {queue}: {exc}")
        say(f"{scenario}: scripts/rabbitmq-cluster.sh start-node {stopped}")
        t = time.monotonic()
        cluster("start-node", str(stopped), check=False)
        res.restart_seconds = time.monotonic() - t
        res.running_after_restart = running_nodes(1)
    return res


def exercise(res: Result, queue: str, messages: int, rate: float, crash: bool, nack_limit: int,
             give_up: float, amqp: list[str], mgmt: str, say: Callable[[str], None]) -> None:
    scenario, stopped = res.scenario, res.stopped_node
    mgmt_urls = [mgmt.replace(":15683", f":{15680 + n}") for n in (1, 2, 3)]
    nodes = [amqp[0]] if scenario == "follower" else amqp  # "through node lt1"; the list to fail over
    res.leader_before = leader(mgmt_urls, queue)
    say(f"{scenario}: queue {queue} (leader {res.leader_before}), publishing {messages} through lt1")

    pub = Publisher(nodes)
    pub.connect(time.monotonic() + 30)
    stopper: Stopper | None = None
    waits_before: list[float] = []
    stall = 0.0
    t0 = time.monotonic()
    n = 0
    in_doubt = False
    nacks_in_a_row = 0
    try:
        while n < messages:
            if n == messages // 2 and stopper is None:
                say(f"{scenario}: message {n}: stopping lt{stopped} ({res.how})")
                stopper = Stopper(stopped, crash)
                stopper.start()
            if rate > 0:
                time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
            res.attempts += 1
            if in_doubt:
                res.republished.append(n)
            else:
                res.published += 1
                start = time.monotonic()  # the message's first attempt: its wait runs to its confirm
            try:
                pub.publish(queue, n)
            except LOST as exc:
                # the connection went away before the confirm came: the broker may or may not have
                # the message; publish it again on the next node (the consumer may see it twice)
                say(f"{scenario}: message {n}: {type(exc).__name__}: {exc}; reconnecting")
                in_doubt = True
                pub.close()
                pub.connect(time.monotonic() + 60)
                res.reconnects += 1
                res.reconnect_ports.append(pub.port)
                continue
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                # refused (a quorum queue without a leader nacks): publish it again shortly.  A
                # channel opened on a surviving node while the killed node still led the queue
                # keeps nacking every publish to it (seen for 7 minutes on RabbitMQ 3.10.8), long
                # after the new leader is elected; a new channel publishes at once.  So after
                # `nack_limit` refusals in a row, publish on a new channel.
                res.nacked += 1
                nacks_in_a_row += 1
                if res.nacked <= 3:
                    say(f"{scenario}: message {n}: {type(exc).__name__} (refused {res.nacked} times so far)")
                in_doubt = True
                if nack_limit and nacks_in_a_row >= nack_limit:
                    say(f"{scenario}: message {n}: refused {nacks_in_a_row} times in a row over "
                        f"{time.monotonic() - start:.1f} s; publishing on a new channel")
                    pub.reopen_channel()
                    res.channel_reopens += 1
                    nacks_in_a_row = 0
                else:
                    time.sleep(0.05)
                if time.monotonic() - start > give_up:
                    raise RuntimeError(f"message {n} refused for {give_up:.0f} s") from exc
                continue
            nacks_in_a_row = 0
            wait = time.monotonic() - start
            if stopper is None:
                waits_before.append(wait)
            else:
                stall = max(stall, wait)
                if stopper.t_closed:
                    res.after_stop += 1
            res.confirmed += 1
            in_doubt = False
            n += 1
        res.publish_seconds = time.monotonic() - t0
    finally:
        pub.close()
        if stopper is not None:
            stopper.join(timeout=300)
            if stopper.error:
                raise RuntimeError(stopper.error)
            res.stop_seconds = stopper.t_done - stopper.t0
            res.port_closed_seconds = (stopper.t_closed - stopper.t0) if stopper.t_closed else float("nan")
    res.stall_seconds = stall
    res.baseline_ms = statistics.median(waits_before) * 1000 if waits_before else 0.0
    res.leader_after = leader(mgmt_urls, queue)
    say(f"{scenario}: published {res.published}, confirmed {res.confirmed}; consuming through lt3")

    # consume everything through node 3
    seen: dict[int, int] = {}
    conn = pika.BlockingConnection(params(amqp[2]))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    for method, _props, body in ch.consume(queue, inactivity_timeout=3):
        if method is None:
            break
        k = int(body.split()[1])
        seen[k] = seen.get(k, 0) + 1
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    res.consumed = sum(seen.values())
    res.lost = [k for k in range(res.confirmed) if k not in seen]
    res.duplicated = {k: c for k, c in seen.items() if c > 1}
    res.unexpected_duplicates = [k for k in res.duplicated if k not in res.republished]
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=["follower", "publisher", "both"], default="both")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--crash", action="store_true",
                    help="SIGKILL the node's Erlang VM instead of `stop-node` (a graceful shutdown)")
    ap.add_argument("--nack-limit", type=int, default=5,
                    help="refusals in a row before publishing on a new channel (0: never)")
    ap.add_argument("--give-up", type=float, default=120.0,
                    help="seconds one message may stay refused before the check fails")
    ap.add_argument("--rate", type=float, default=70.0,
                    help="messages per second at most (0: as fast as confirms come); paced so that "
                         "the node goes down while messages are still being published")
    args = ap.parse_args()

    def say(s: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)

    if not SCRIPT.exists():
        sys.exit(f"{SCRIPT} is missing")

    say("scripts/rabbitmq-cluster.sh start")
    cluster("start")
    amqp, mgmt = urls()
    results = []
    for scenario in (["follower", "publisher"] if args.scenario == "both" else [args.scenario]):
        if running_nodes(1) != 3:
            cluster("start")
        results.append(run(scenario, args.messages, args.rate, args.crash, args.nack_limit, args.give_up,
                           amqp, mgmt, say))
    print("\n".join(r.report() for r in results))
    return 0 if all(r.ok() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
