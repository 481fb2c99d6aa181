"""The fault-injection suite (tests/faults.py) from the command line.

    python bench/faults.py                       # short form (CI runs it through tests/test_chaos.py)
    python bench/faults.py --seconds 600         # long form, by hand
    python bench/faults.py --soak --seconds 1800 --rate 58   # no faults: memory and latency over time
    python bench/faults.py --cluster             # on three RabbitMQ nodes, one stopped mid-run

Exit status 1 if anything is lost, duplicated, unanswered, or a worker died on its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import services  # noqa: E402
from tests.faults import CLUSTER_SCRIPT, Plan, cluster_urls, report, run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--kill-every", type=float, default=6.0)
    ap.add_argument("--broker-restarts", type=int, default=1)
    ap.add_argument("--store-outages", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--soak", action="store_true", help="no faults; memory and latency over time")
    ap.add_argument("--cluster", action="store_true",
                    help="run on the three-node cluster of scripts/rabbitmq-cluster.sh and stop a node mid-run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    plan = Plan(seconds=a.seconds, rate=a.rate, size=a.size, kill_every=a.kill_every,
                broker_restarts=a.broker_restarts, store_outages=a.store_outages, seed=a.seed, soak=a.soak,
                slow_delay=0.0 if a.soak else Plan.slow_delay,
                cluster=str(CLUSTER_SCRIPT) if a.cluster else "",
                drain_seconds=max(120.0, a.seconds / 2))
    amqp, mgmt = services.broker_urls()
    if a.cluster:
        subprocess.run([str(CLUSTER_SCRIPT), "start"], check=True)
        amqp, mgmt = cluster_urls()
        plan.broker_restarts = 0  # the node stop is this run's broker fault
    with tempfile.TemporaryDirectory() as tmp:
        res = run(plan, Path(tmp), amqp, mgmt, say=lambda s: print(s, flush=True))
    print(json.dumps(asdict(res), indent=2) if a.json else report(res))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
