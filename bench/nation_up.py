"""The whole of today's network on this one machine: 35 hubs, 4,145 agencies, one broker.

    python bench/nation_up.py [--format yaml|json] [--broker node|default] [--node lt-bench] [--keep]

Too long for CI (minutes; it needs root for its own broker node).  In order, each timed:

1. today's directory (``bench/directory_gen.py``) in a namespace of its own, as a topology file in
   YAML or (``--format json``) JSON, which each of the 35 workers reads at its start;
2. its dev PKI with ECDSA agency keys (``pki init --agency-keys ec``), beside RSA keys for a
   sample of agencies, made on every core (the default, and the baseline), scaled to all;
3. ``broker setup`` (first run, then again: reads only), with the time each vhost's import took,
   beside the per-call set-up this replaced (one request or AMQP round trip per object) for one
   province in the same run; ``lienthong broker setup --hub`` run as a command for the national
   hub and for the largest province, as their operators run it; the broker's memory;
4. ``lienthong up`` until every hub's ingress has its worker, with the CPU that took, the
   workers' memory and their CPU and the broker's while idle (a minute), the broker's memory;
5. a document from a commune of Nghệ An to a commune of Cao Bằng, until it is in the recipient's
   inbox and both hub receipts (accepted, delivered) are back with the sender;
6. two directory versions, each signed (``directory sign``) and handed to the national hub
   (``directory publish``), timed until every one of the 35 hubs has applied it (its copy in
   ``data/directory/``): version 1 adds one commune, version 2 moves the 100 agencies of one
   province to another's hub (provinces merged, as in 2025).  Meanwhile Nghệ An's commune sends a
   document to Cao Bằng's every 0.2 s; each must arrive once.  Then a document to the new commune
   and one to a moved agency must be in their inboxes on their (new) hubs.

By default the broker is a node of its own (``scripts/rabbitmq-node.sh start lt-bench``), deleted
at the end: a directory of this size left on the shared broker slows it for everybody.  With
``--broker default`` the vhosts and users are made on this machine's broker and deleted at the
end, even on failure.  ``--keep`` keeps the node and the files (the command to clean up is printed).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.directory_gen import generate, write  # noqa: E402
from broker.core import wire  # noqa: E402
from broker.core.edxml import Organ, build_document  # noqa: E402
from broker.core.signer import sign  # noqa: E402
from broker.core.topology import Topology  # noqa: E402
from broker.relay import definitions, devpki, layout  # noqa: E402
from broker.relay.amqp import blocking  # noqa: E402
from broker.relay.provision import Management, apply, q  # noqa: E402
from broker.settings import Settings  # noqa: E402
from tests import services  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENDER, RECIPIENT = "000.00.51.H41", "000.00.51.H14"  # communes of Nghệ An and of Cao Bằng
RSA_SAMPLE = 100


def say(text: str) -> None:
    print(text, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def broker_node(m: Management) -> dict[str, Any]:
    return dict(m.get("/api/nodes")[0])


def per_call_setup(topology: Topology, hub_id: str, mgmt_url: str, broker_ca: Path) -> None:
    """The set-up this replaced, for one hub: a request per vhost, user and permission, an AMQP
    round trip per exchange, queue and binding (the baseline)."""
    m = Management(mgmt_url)
    names = wire.names(topology)
    vhost = names.vhost(hub_id)
    m.put(f"/api/vhosts/{q(vhost)}", {"description": f"lienthong hub {hub_id}"})
    m.put(f"/api/permissions/{q(vhost)}/{q(m.user)}", {"configure": ".*", "write": ".*", "read": ".*"})
    for p in layout.permissions(topology):
        if p.vhost == vhost:
            m.put(f"/api/users/{q(p.user)}", {"password_hash": "", "tags": ""})
            m.put(f"/api/permissions/{q(p.vhost)}/{q(p.user)}",
                  {"configure": p.configure, "write": p.write, "read": p.read})
    blocking.declare(layout.admin_url(topology, hub_id, mgmt_url, broker_ca), layout.declarations(topology, hub_id))


def worker_stats(parent: int) -> tuple[int, float, int]:
    """(worker processes, their CPU seconds so far, their resident memory in bytes) under ``parent``."""
    count, cpu, rss = 0, 0.0, 0
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if d.name.isdigit() and int(stat[1]) == parent:
            count += 1
            cpu += (int(stat[11]) + int(stat[12])) / tick
            rss += int(stat[21]) * page
    return count, cpu, rss


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def versions_in_force(copies: Path, hubs: list[str], seen: dict[str, tuple[float, int]]) -> dict[str, int]:
    """The directory version each hub's copy holds (0: none yet); ``seen`` caches by modification time."""
    out = {}
    for hub in hubs:
        path = copies / f"{hub}.json"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            out[hub] = 0
            continue
        if seen.get(hub, (None, 0))[0] != mtime:
            outer = json.loads(path.read_bytes())
            seen[hub] = (mtime, int(json.loads(base64.b64decode(outer["payload"]))["version"]))
        out[hub] = seen[hub][1]
    return out


def spread(raw: dict[str, Any], version: int, what: str, base: Path, env: dict[str, str],
           hubs: list[str]) -> float:
    """Sign ``raw`` as ``version``, publish it to the root hub, and wait until every hub applied it:
    the seconds from the start of ``directory publish`` (which checks the file first) to the last."""
    source, signed = base / f"directory-{version}.json", base / f"signed-{version}.json"
    source.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    sign_s, done = timed(lambda: subprocess.run(
        [sys.executable, "-m", "broker.cli", "directory", "sign", str(source), "-o", str(signed), "--version",
         str(version)], env=env, cwd=ROOT, capture_output=True, text=True))
    if done.returncode:
        raise SystemExit(f"directory sign: {done.stderr}")
    copies, seen = base / "data" / "directory", dict[str, tuple[float, int]]()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "broker.cli", "directory", "publish", str(signed)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"directory publish: {done.stderr}")
    published = time.perf_counter() - started
    applied: dict[str, float] = {}
    while len(applied) < len(hubs):
        if time.perf_counter() - started > 300:
            raise SystemExit(f"version {version}: {len(applied)} of {len(hubs)} hubs applied it in 300 s")
        for hub, v in versions_in_force(copies, hubs, seen).items():
            if v >= version and hub not in applied:
                applied[hub] = time.perf_counter() - started
        time.sleep(0.05)
    times = sorted(applied.values())
    say(f"directory version {version} ({what}): signed in {sign_s:.1f} s; 'directory publish' took {published:.1f} s; "
        f"applied by the first hub after {times[0]:.1f} s, half of them after {times[len(times) // 2]:.1f} s, "
        f"all {len(hubs)} after {times[-1]:.1f} s (from the start of 'directory publish')")
    return times[-1]


class Trickle(threading.Thread):
    """Documents from ``sender`` to ``recipient``, one every ``every`` seconds until stopped."""

    def __init__(self, settings: Settings, topology: Topology, sender: str, recipient: str, every: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.topology, self.sender, self.recipient, self.every = (
            settings, topology, sender, recipient, every)
        self.sent: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from broker.cli.clients import agency_client, agency_key

        try:
            out, key = agency_client(self.settings, self.sender), agency_key(self.settings, self.sender)
            s, r = self.topology.agency(self.sender), self.topology.agency(self.recipient)
            while not self.stop.wait(self.every):
                doc = sign(build_document(Organ(self.sender, s.name), [Organ(self.recipient, r.name)],
                                          subject=f"Công văn số {len(self.sent) + 1} trong lúc đổi danh bạ",
                                          attachments=[("a.pdf", "application/pdf", os.urandom(3000))]), key)
                self.sent.append(out.send(doc))
            out.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc


def cleanup(args: argparse.Namespace, mgmt_url: str, topology: Topology | None, extra_vhosts: list[str]) -> None:
    if args.keep:
        say(f"kept: {args.node} (scripts/rabbitmq-node.sh delete {args.node})" if args.broker == "node" else "kept")
        return
    if args.broker == "node":
        subprocess.run([str(ROOT / "scripts" / "rabbitmq-node.sh"), "delete", args.node], check=False)
        return
    if topology is None:
        return
    m, names = Management(mgmt_url), wire.names(topology)
    for vhost in [names.vhost(h) for h in topology.hubs] + extra_vhosts:
        try:
            m.request("DELETE", f"/api/vhosts/{q(vhost)}", timeout=300)
        except Exception as exc:  # noqa: BLE001 - clean up what can be, say what could not
            say(f"could not delete vhost {vhost}: {exc}")
    users = layout.users(topology)
    if extra_vhosts:  # the baseline's namespace, and that of 'broker setup --hub'
        for suffix in ("b", "h"):
            users += layout.users(Topology(topology.hubs, topology.agencies, topology.settings,
                                           topology.namespace + suffix))
    m.delete_users(users, timeout=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", choices=["node", "default"], default="node")
    ap.add_argument("--node", default="lt-bench", help="the name of the node of its own (scripts/rabbitmq-node.sh)")
    ap.add_argument("--keep", action="store_true", help="keep the broker node (or vhosts) and the files")
    ap.add_argument("--format", choices=["yaml", "json"], default="yaml", help="the topology file's format")
    args = ap.parse_args()
    if args.broker == "node":
        subprocess.run([str(ROOT / "scripts" / "rabbitmq-node.sh"), "start", args.node], check=True)
        urls = dict(line.split("=", 1) for line in subprocess.run(
            [str(ROOT / "scripts" / "rabbitmq-node.sh"), "urls", args.node], check=True, capture_output=True,
            text=True).stdout.split())
        amqp_url, mgmt_url = urls["LIENTHONG_NODE_AMQP"], urls["LIENTHONG_NODE_MGMT"]
    else:
        amqp_url, mgmt_url = services.broker_urls()
    base = Path(tempfile.mkdtemp(prefix="lt-nation-"))
    namespace = f"ltn{uuid.uuid4().hex[:6]}"
    topology: Topology | None = None
    extra_vhosts: list[str] = []  # the baseline's
    up: subprocess.Popen[bytes] | None = None
    try:
        m = Management(mgmt_url)
        mgmt_node = urlsplit(mgmt_url)._replace(netloc=urlsplit(mgmt_url).netloc.rpartition("@")[2]).geturl()
        raw = generate("today", namespace=namespace, amqp_url=amqp_url, management_url=mgmt_node)
        topology_file = base / f"topology.{args.format}"
        write(raw, topology_file)
        load_s, topology = timed(lambda: Topology.load(topology_file))
        say(f"directory: {len(topology.hubs)} hubs, {len(topology.agencies):,} agencies, namespace {namespace}, "
            f"broker {broker_node(m)['name']} (RabbitMQ {m.get('/api/overview')['rabbitmq_version']}); "
            f"{topology_file.name} read in {load_s:.2f} s")
        transport = services.transport_ca()

        # -- PKI ------------------------------------------------------------------------------------
        ec_s, _ = timed(lambda: devpki.init(base / "pki", topology, transport, agency_keys="ec"))
        sample = Topology(topology.hubs, dict(list(topology.agencies.items())[:RSA_SAMPLE]), topology.settings,
                          topology.namespace)
        rsa_s, _ = timed(lambda: devpki.init(base / "pki-rsa", sample, transport))
        shutil.rmtree(base / "pki-rsa")
        all_rsa = rsa_s / RSA_SAMPLE * len(topology.agencies)
        say(f"pki init, ECDSA agency keys: {ec_s:.1f} s | RSA agency keys (baseline, on every core): "
            f"{RSA_SAMPLE} agencies and the {len(topology.hubs)} hubs in {rsa_s:.1f} s, so about {all_rsa:.0f} s "
            f"for all")

        # -- broker setup ---------------------------------------------------------------------------
        mem0 = broker_node(m)["mem_used"]
        vhost_s: dict[str, float] = {}
        accounts_s: list[float] = []
        import_vhost, import_accounts = definitions.import_vhost, definitions.import_accounts

        def timed_vhost(api: Any, vhost: str, *rest: Any) -> bool:  # the first run's time is kept
            s, out = timed(lambda: import_vhost(api, vhost, *rest))
            vhost_s.setdefault(vhost, s)
            return bool(out)

        def timed_accounts(*a: Any) -> int:
            s, out = timed(lambda: import_accounts(*a))
            accounts_s.append(s)
            return int(out)

        definitions.import_vhost, definitions.import_accounts = timed_vhost, timed_accounts  # type: ignore[assignment]
        try:
            first_s, counts = timed(lambda: apply(topology, mgmt_url))
            again_s, _ = timed(lambda: apply(topology, mgmt_url))
        finally:
            definitions.import_vhost, definitions.import_accounts = import_vhost, import_accounts
        names = wire.names(topology)
        largest = max((h for h in topology.hubs if h != "national"),
                      key=lambda h: sum(1 for a in topology.agencies.values() if a.hub == h))
        say(f"broker setup: {counts}")
        say(f"broker setup, first run: {first_s:.1f} s (accounts {accounts_s[0]:.1f} s, vhosts "
            f"{sum(vhost_s.values()):.1f} s); run again (reads only): {again_s:.1f} s")
        share = {h: sum(1 for p in layout.permissions(topology) if p.vhost == names.vhost(h))
                 / len(layout.permissions(topology)) for h in ("national", largest)}
        say("one hub alone (what 'broker setup --hub' does): "
            + ", ".join(f"{h} {vhost_s[names.vhost(h)]:.1f} s for its vhost + about {share[h] * accounts_s[0]:.1f} s "
                        f"for its accounts" for h in ("national", largest)))
        baseline_topology = Topology.from_dict(dict(raw, namespace=namespace + "b"))
        extra_vhosts.append(wire.names(baseline_topology).vhost(largest))
        try:
            call_s, _ = timed(lambda: per_call_setup(baseline_topology, largest, mgmt_url, transport / "ca.pem"))
            say(f"baseline, one request or round trip per object, province {largest} alone: {call_s:.1f} s")
        except Exception as exc:  # noqa: BLE001 - the baseline failing is a figure too
            say(f"baseline, one request or round trip per object, province {largest}: failed: {exc}")
        # 'broker setup --hub H' as an operator runs it for its own hub, on the same broker (the
        # objects of a namespace of their own: the rest of the country's are there already)
        alone_raw = dict(raw, namespace=namespace + "h")
        alone_file = base / f"alone.{args.format}"
        write(alone_raw, alone_file)
        alone_names = wire.names(Topology.from_dict(alone_raw))
        alone_env = {**os.environ, "LIENTHONG_TOPOLOGY": str(alone_file), "LIENTHONG_PKI": str(base / "pki"),
                     "LIENTHONG_DATA": str(base / "data-alone"), "LIENTHONG_TRANSPORT_CA": str(transport),
                     "LIENTHONG_MGMT_URL": mgmt_url, "LIENTHONG_LANG": "en"}
        for hub_id in ("national", largest):
            extra_vhosts.append(alone_names.vhost(hub_id))
            hub_s, done = timed(lambda h=hub_id: subprocess.run(
                [sys.executable, "-m", "broker.cli", "broker", "setup", "--hub", h], env=alone_env, cwd=ROOT,
                capture_output=True, text=True))
            say(f"'lienthong broker setup --hub {hub_id}' (the command, its start included): {hub_s:.1f} s"
                + ("" if done.returncode == 0 else f" FAILED: {done.stderr.strip()[-300:]}"))
        mem1 = broker_node(m)["mem_used"]
        broker_pid = int(broker_node(m)["os_pid"])
        layout_from = cpu_seconds(broker_pid)
        time.sleep(30)
        say(f"broker memory: {mem0 / 2**20:.0f} MiB before, {mem1 / 2**20:.0f} MiB with the layout; its CPU "
            f"with the layout alone (no hub): {100 * (cpu_seconds(broker_pid) - layout_from) / 30:.0f}% of a core")

        # -- lienthong up ---------------------------------------------------------------------------
        env = {**os.environ, "LIENTHONG_DATA": str(base / "data"), "LIENTHONG_TOPOLOGY": str(topology_file),
               "LIENTHONG_PKI": str(base / "pki"), "LIENTHONG_TRANSPORT_CA": str(transport),
               "LIENTHONG_STATE_URL": str(base / "state"), "LIENTHONG_MGMT_URL": mgmt_url, "LIENTHONG_LANG": "en"}
        log = open(base / "up.log", "wb")  # noqa: SIM115 - closed with the run
        broker_cpu = cpu_seconds(broker_pid)
        started = time.perf_counter()
        up = subprocess.Popen([sys.executable, "-m", "broker.cli", "up"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=ROOT)
        vhosts = {names.vhost(h) for h in topology.hubs}
        serving: set[str] = set()
        while serving != vhosts:
            if up.poll() is not None or time.perf_counter() - started > 900:
                raise SystemExit(f"lienthong up: {len(serving)} of {len(vhosts)} hubs serving; see {base / 'up.log'}")
            time.sleep(1)
            serving = {x["vhost"] for x in m.get("/api/queues?columns=vhost,name,consumers") or []
                       if x["vhost"] in vhosts and x["name"] == wire.Q_INGRESS and x.get("consumers")}
        start_s = time.perf_counter() - started
        workers, cpu0, rss = worker_stats(up.pid)
        say(f"lienthong up: every hub serves after {start_s:.1f} s ({workers} worker processes, "
            f"{rss / 2**30:.2f} GiB resident); CPU until then: workers {cpu0:.0f} s, 'up' itself "
            f"{cpu_seconds(up.pid):.0f} s, broker {cpu_seconds(broker_pid) - broker_cpu:.0f} s")
        idle_from = cpu_seconds(broker_pid)
        time.sleep(60)
        workers, cpu1, rss = worker_stats(up.pid)
        say(f"idle, 60 s: the workers used {100 * (cpu1 - cpu0) / 60:.0f}% of a core, the broker "
            f"{100 * (cpu_seconds(broker_pid) - idle_from) / 60:.0f}%; {rss / 2**30:.2f} GiB resident; "
            f"broker memory {broker_node(m)['mem_used'] / 2**20:.0f} MiB")

        # -- a document across provinces, and its receipts back -------------------------------------
        from broker.cli.clients import agency_client, agency_key

        settings = Settings.from_env(env)
        sender, recipient = topology.agency(SENDER), topology.agency(RECIPIENT)
        doc = sign(build_document(Organ(SENDER, sender.name), [Organ(RECIPIENT, recipient.name)],
                                  subject="Công văn thử ở quy mô toàn quốc",
                                  attachments=[("cong-van.pdf", "application/pdf", os.urandom(10_000))]),
                   agency_key(settings, SENDER))
        out, inbox = agency_client(settings, SENDER), agency_client(settings, RECIPIENT)
        sent = time.perf_counter()
        message_id = out.send(doc)
        got: list[Any] = []
        while not got and time.perf_counter() - sent < 120:
            inbox.fetch(lambda item: got.append(item) if item.message_id == message_id else None, wait=0.5)
        arrived = time.perf_counter() - sent
        receipts = out.follow(message_id, timeout=120)
        back = time.perf_counter() - sent
        ok = bool(got) and got[0].body == doc and set(receipts) == {"accepted", "delivered"}
        say(f"document {sender.name} ({SENDER}, hub {sender.hub}) -> {recipient.name} ({RECIPIENT}, hub "
            f"{recipient.hub}): in the inbox after {arrived:.2f} s, receipts {sorted(receipts)} back after "
            f"{back:.2f} s; {'bytes unchanged' if ok else 'FAILED'}")
        out.close()
        inbox.close()

        # -- directory versions spreading, with documents moving meanwhile ----------------------------
        hubs = sorted(topology.hubs)
        trickle = Trickle(settings, topology, SENDER, RECIPIENT, 0.2)
        trickle.start()
        taken = {a["organ_id"] for a in raw["agencies"]}
        new_code = next(c for c in (f"{i:03d}.00.99.H41" for i in range(1, 1000)) if c not in taken)
        v1 = dict(raw, agencies=[*raw["agencies"], {"organ_id": new_code, "name": "UBND xã Mới Lập", "hub": "H41",
                                                    "level": "commune", "parent": "000.00.00.H41"}])
        add_s = spread(v1, 1, "adds one commune", base, env, hubs)
        donor, taker = sorted(h for h in hubs if h not in ("national", "H41", "H14"))[:2]
        moving = [a["organ_id"] for a in v1["agencies"] if a["hub"] == donor][:100]
        v2 = dict(v1, agencies=[dict(a, hub=taker) if a["organ_id"] in moving else a for a in v1["agencies"]])
        move_s = spread(v2, 2, f"moves {len(moving)} agencies of {donor} to {taker}", base, env, hubs)
        trickle.stop.set()
        trickle.join(60)
        if trickle.error is not None:
            raise SystemExit(f"the documents sent meanwhile: {trickle.error!r}")
        inbox = agency_client(settings, RECIPIENT)
        wanted, counted = set(trickle.sent), dict[str, int]()
        deadline = time.perf_counter() + 120
        while set(counted) < wanted and time.perf_counter() < deadline:
            inbox.fetch(lambda item: counted.__setitem__(item.message_id, counted.get(item.message_id, 0) + 1)
                        if item.kind == "edxml" else None, wait=0.5)
        inbox.close()
        twice = sorted(m for m, n in counted.items() if n > 1)
        lost = sorted(wanted - set(counted))
        say(f"meanwhile {len(wanted)} documents {SENDER} -> {RECIPIENT}: {len(wanted) - len(lost)} arrived, "
            f"{len(lost)} missing, {len(twice)} twice")
        late = Settings.from_env(env)
        check_out = agency_client(late, SENDER)
        arrived_new: dict[str, bool] = {}
        for code, hub in ((new_code, "H41"), (moving[0], taker)):
            doc = sign(build_document(Organ(SENDER, sender.name), [Organ(code, code)], subject="Sau khi đổi danh bạ",
                                      attachments=[("a.pdf", "application/pdf", os.urandom(3000))]),
                       agency_key(late, SENDER))
            check_out.send(doc)
            url = layout.account_url(Topology.from_dict(v2), hub, late.keys.hub_account(hub, "hub"),
                                     late.keys.broker_ca)
            deadline = time.perf_counter() + 60
            while time.perf_counter() < deadline and not blocking.queue_depth(url, wire.inbox_queue(code)):
                time.sleep(0.2)
            arrived_new[code] = bool(blocking.queue_depth(url, wire.inbox_queue(code)))
        check_out.close()
        say("after the versions: " + ", ".join(f"a document to {c} {'is' if ok else 'is NOT'} in its inbox"
                                               for c, ok in arrived_new.items()))
        ok = ok and not lost and not twice and all(arrived_new.values())
        print(json.dumps({"format": args.format, "load_s": load_s, "pki_ec_s": ec_s, "pki_rsa_s_estimate": all_rsa,
                          "setup_first_s": first_s, "setup_again_s": again_s, "start_s": start_s,
                          "broker_mem_mib": broker_node(m)["mem_used"] / 2**20, "workers_rss_gib": rss / 2**30,
                          "doc_inbox_s": arrived, "receipts_back_s": back, "directory_add_one_s": add_s,
                          "directory_move_100_s": move_s, "ok": ok}))
        if not ok:
            raise SystemExit(1)
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                up.kill()
        cleanup(args, mgmt_url, topology, extra_vhosts)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
