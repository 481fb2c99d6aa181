"""The fault-injection suite (bench/faults.py) in its short form: 40 s of signed documents through
four hubs while workers are SIGKILLed, RabbitMQ restarts, state stores lock, and poison arrives.
The test command runs it with one seed (one fault schedule) and the long runs
(``scripts/test.sh -m long``) with a second; `LIENTHONG_FAULT_SEEDS` names others for the test command."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.faults import FAR, SENDER, Plan, Suite, report, run
from tests.relay import Relay

pytestmark = pytest.mark.broker
SEEDS = [int(s) for s in os.environ.get("LIENTHONG_FAULT_SEEDS", "20261122").split(",")]
LONG_SEEDS = [4177]
"""Another schedule, 50 s more: among the long runs, to keep the test command well within CI's time."""


@pytest.mark.parametrize("seed", [*SEEDS, *(pytest.param(s, marks=pytest.mark.long) for s in LONG_SEEDS
                                             if s not in SEEDS)])
def test_nothing_lost_nothing_twice_under_faults(seed: int, rabbitmq_urls: tuple[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """600 documents under SIGKILLs, a broker restart, store outages and poison: each delivered
    exactly once, each poison message answered by a signed rejection with its code."""
    amqp, mgmt = rabbitmq_urls
    local = urlsplit(amqp).hostname in ("127.0.0.1", "localhost") and shutil.which("rabbitmqctl") is not None
    if not local and os.environ.get("CI"):
        pytest.fail("the fault suite restarts the broker: it needs the local broker and rabbitmqctl")
    plan = Plan(seconds=40, rate=15, kill_every=6, broker_restarts=1 if local else 0, store_outages=2, seed=seed)
    res = run(plan, tmp_path, amqp, mgmt, say=lambda s: None)
    with capsys.disabled():
        print(f"\nfault suite (short form, seed {seed}):\n" + report(res))
    assert res.sent >= plan.seconds * plan.rate / 2  # the sender waits while the broker is away
    assert res.lost == 0 and res.duplicated == 0, "\n".join(res.missing)
    assert res.delivered == res.sent
    assert res.poison_sent >= 5 and res.poison_rejected == res.poison_sent
    assert res.poison_unanswered == 0 and res.poison_wrong_code == []
    assert res.kills >= 5 and res.store_outages == 2
    assert res.broker_restarts == plan.broker_restarts
    assert len(res.recovery_seconds) == plan.broker_restarts
    assert res.crashed_workers == 0 and res.worker_tracebacks == 0
    assert res.ok


def test_a_missing_document_explains_itself(rabbitmq_urls: tuple[str, str], tmp_path: Path) -> None:
    """When the suite finds a document missing it says which hub last recorded it and where it
    is: here the national hub's worker is not running, so the document waits in its ingress."""
    relay = Relay(tmp_path, *rabbitmq_urls, workers=0)
    try:
        relay.start_worker("H41")
        suite = Suite(relay, Plan())
        suite.t0_wall = time.time()
        doc = relay.document(SENDER, [FAR])
        digest = hashlib.sha256(doc).hexdigest()
        suite.expect[digest], suite.sent_at[digest] = FAR, time.time()
        relay.client(SENDER).send(doc)
        deadline = time.monotonic() + 30
        while relay.depth("national", "ingress") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        [line] = suite.explain([digest])
        assert line.startswith(digest[:16] + f" to {FAR}")
        assert "last recorded by H41 (verdict accepted; claims hub:national=confirmed" in line
        assert line.endswith("now national/ingress")
    finally:
        relay.close()
