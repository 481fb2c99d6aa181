"""Starting and supervising workers: a worker waits for what it needs, and `lienthong up` restarts
one that dies, with back-off, saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from structlog.testing import capture_logs

from broker.relay.supervise import Supervisor
from tests.relay import ROOT, Relay

N_COMMUNE, C_COMMUNE = "000.00.51.H41", "001.00.31.H14"


def _exits(code: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def test_supervisor_restarts_with_doubling_back_off_and_logs_why() -> None:
    """A worker that keeps dying right after its start is restarted after 1, 2, then 4 s (not in a
    tight loop), each exit logged with its code; once a worker has lived long enough the back-off
    starts again from 1 s."""
    now = [0.0]
    started: list[subprocess.Popen[bytes]] = []

    def start(hub: str, slot: int) -> subprocess.Popen[bytes]:
        started.append(_exits(3))
        return started[-1]

    with capture_logs() as logs:
        sup = Supervisor(start, [("H41", 0)], clock=lambda: now[0])
        waits = []
        for _ in range(3):
            started[-1].wait()
            sup.poll()  # notices the exit
            due = [e for e in logs if e["event"] == "worker exited; restarting"][-1]["in_seconds"]
            waits.append(due)
            count = len(started)
            now[0] += due - 0.1
            sup.poll()
            assert len(started) == count, "restarted before its back-off ran out"
            now[0] += 0.1
            sup.poll()
            assert len(started) == count + 1
        assert waits == [1.0, 2.0, 4.0]
        started[-1].wait()
        now[0] += 60  # this one lived past stable_seconds
        sup.poll()
    exits = [e for e in logs if e["event"] == "worker exited; restarting"]
    assert exits[-1]["in_seconds"] == 1.0
    assert all(e["exit_code"] == 3 and e["hub"] == "H41" for e in exits)
    assert sup.restarts == 3


@pytest.mark.broker
@pytest.mark.postgres
def test_worker_waits_for_its_database_then_serves(rabbitmq_urls: tuple[str, str], postgres_server: str,
                                                   tmp_path: Path) -> None:
    """Workers started before their PostgreSQL database exists do not die: each logs why it waits
    and retries with back-off; once the database is created they serve, and a document crosses."""
    name = f"lt_{uuid.uuid4().hex[:12]}"
    url = urlsplit(postgres_server)._replace(path="/" + name).geturl()
    relay = Relay(tmp_path, *rabbitmq_urls, state_url=url)
    try:
        deadline = time.monotonic() + 30
        while "start failed; retrying" not in relay.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        waits = [json.loads(line) for line in relay.log_text().splitlines()
                 if "start failed; retrying" in line]
        assert waits and f'database "{name}" does not exist' in waits[0]["error"]
        assert all(p.poll() is None for procs in relay.procs.values() for p in procs)
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        doc = relay.document(N_COMMUNE, [C_COMMUNE])
        relay.client(N_COMMUNE).send(doc)
        assert [i.body for i in relay.take(C_COMMUNE, 1, timeout=60)] == [doc]
    finally:
        relay.close()
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.broker
def test_up_restarts_a_worker_that_dies(rabbitmq_urls: tuple[str, str], tmp_path: Path) -> None:
    """`lienthong up` notices a worker killed from outside, logs its exit code, starts it again, and
    the relay goes on delivering."""
    relay = Relay(tmp_path, *rabbitmq_urls, workers=0)
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "broker.cli", "--log-json", "up"], env=relay.env, cwd=ROOT,
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while len(_children(up.pid)) < len(relay.topology.hubs) and time.monotonic() < deadline:
            time.sleep(0.2)
        victims = _children(up.pid)
        assert len(victims) == len(relay.topology.hubs)
        os.kill(victims[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        text = ""
        while '"worker restarted"' not in text and time.monotonic() < deadline:
            time.sleep(0.2)
            text = (tmp_path / "up.log").read_text(errors="replace")
        events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        exited = [e for e in events if e["event"] == "worker exited; restarting"]
        assert len(exited) == 1 and exited[0]["exit_code"] == -signal.SIGKILL
        assert any(e["event"] == "worker restarted" for e in events)
        assert victims[0] not in _children(up.pid) and len(_children(up.pid)) == len(relay.topology.hubs)
        doc = relay.document(N_COMMUNE, [C_COMMUNE])
        relay.client(N_COMMUNE).send(doc)
        assert [i.body for i in relay.take(C_COMMUNE, 1, timeout=60)] == [doc]
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
        log.close()
        relay.close()
