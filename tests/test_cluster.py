"""The relay on a three-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh, on this machine): the
node every client prefers is shut down mid-run; quorum queues keep the messages, the hub workers
move to the other nodes, and every document is still delivered once.

A long run (three more broker nodes, about a minute and a half): ``scripts/test.sh -m long``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import CLUSTER_SCRIPT, Plan, cluster_urls, report, run

pytestmark = [pytest.mark.broker, pytest.mark.long]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    if shutil.which("rabbitmq-server") is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the cluster test needs Debian's rabbitmq-server and root")
        pytest.skip("no local rabbitmq-server to run a cluster with")
    subprocess.run([str(CLUSTER_SCRIPT), "start"], check=True, capture_output=True, timeout=600)
    try:
        yield cluster_urls()
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "stop"], capture_output=True, timeout=300)


def test_relay_carries_on_when_a_node_stops(cluster: tuple[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    amqp, mgmt = cluster
    assert len(amqp.split()) == 3
    plan = Plan(seconds=30, rate=10, kill_every=0, broker_restarts=0, store_outages=0, poison_every=5,
                cluster=str(CLUSTER_SCRIPT))
    res = run(plan, tmp_path, amqp, mgmt, say=lambda s: None)
    with capsys.disabled():
        print("\nfault suite on a three-node cluster, node 1 stopped mid-run:\n" + report(res))
    assert res.node_stops == 1 and len(res.recovery_seconds) == 1
    assert res.connections_lost > 0  # the stopped node carried the workers' connections
    assert res.sent >= plan.seconds * plan.rate / 2
    assert res.lost == 0 and res.duplicated == 0 and res.delivered == res.sent
    assert res.poison_unanswered == 0 and res.poison_wrong_code == []
    assert res.crashed_workers == 0 and res.worker_tracebacks == 0
