"""The fault-injection suite (bench/faults.py) in its short form: 40 s of signed documents through
four hubs while workers are SIGKILLed, RabbitMQ restarts, state stores lock, and poison arrives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.faults import Plan, report, run

pytestmark = pytest.mark.broker


def test_nothing_lost_nothing_twice_under_faults(rabbitmq_urls: tuple[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    amqp, mgmt = rabbitmq_urls
    local = urlsplit(amqp).hostname in ("127.0.0.1", "localhost") and shutil.which("rabbitmqctl") is not None
    if not local and os.environ.get("CI"):
        pytest.fail("the fault suite restarts the broker: it needs the local broker and rabbitmqctl")
    plan = Plan(seconds=40, rate=15, kill_every=6, broker_restarts=1 if local else 0, store_outages=2)
    res = run(plan, tmp_path, amqp, mgmt, say=lambda s: None)
    with capsys.disabled():
        print("\nfault suite (short form):\n" + report(res))
    assert res.sent >= plan.seconds * plan.rate / 2  # the sender waits while the broker is away
    assert res.lost == 0 and res.duplicated == 0
    assert res.delivered == res.sent
    assert res.poison_sent >= 5 and res.poison_rejected == res.poison_sent
    assert res.poison_unanswered == 0 and res.poison_wrong_code == []
    assert res.kills >= 5 and res.store_outages == 2
    assert res.broker_restarts == plan.broker_restarts
    assert len(res.recovery_seconds) == plan.broker_restarts
    assert res.crashed_workers == 0 and res.worker_tracebacks == 0
    assert res.ok
