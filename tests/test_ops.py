"""Operations against a real broker with real traffic: status figures and the parking queue."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.relay import Relay

pytestmark = pytest.mark.broker

SENDER, IDLE, RECIPIENT = "000.00.51.H41", "000.00.02.H41", "000.00.52.H41"


RELAY = {"env": {"LIENTHONG_SQLITE_TIMEOUT": "0.3", "LIENTHONG_WATCH_SECONDS": "0.5"},
         "settings": {"retry_tiers_ms": [200], "alerts": {"inbox_backlog": 2, "inbox_age_seconds": 2}}}




def test_status_matches_traffic(relay: Relay) -> None:
    """Three documents for an agency that reads nothing: its inbox shows 3 and the age of the oldest;
    the ingress has a consumer; a rejected document shows as parked.  The thresholds of
    ``settings.alerts`` (2 messages, 2 s) turn into warnings."""
    sent = time.time()
    for i in range(3):
        relay.client(SENDER).send(relay.document(SENDER, [IDLE], subject=f"chờ {i}"))
    relay.client(SENDER).send(relay.document(SENDER, ["999.99.99.H99"]))
    deadline = time.monotonic() + 30  # the management API refreshes its figures every few seconds
    while True:
        out = relay.cli("status", "--json")
        assert out.returncode == 0, out.stderr
        h41 = next(h for h in json.loads(out.stdout) if h["hub"] == "H41")
        inbox = next(q for q in h41["inboxes"] if q["name"] == f"inbox.{IDLE}")
        if (inbox["messages"], h41["parked"]) == (3, 1) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert inbox["messages"] == 3
    assert 0 <= inbox["oldest_seconds"] <= time.time() - sent + 1
    assert h41["parked"] == 1 and "1 parked message(s)" in h41["warnings"]
    assert f"3 message(s) wait in inbox.{IDLE}" in h41["warnings"]
    time.sleep(max(0.0, sent + 3 - time.time()))
    h41 = next(h for h in json.loads(relay.cli("status", "--json").stdout) if h["hub"] == "H41")
    assert any(w.startswith(f"the oldest message in inbox.{IDLE} waits for") for w in h41["warnings"])
    assert h41["ingress"]["consumers"] >= 1
    assert h41["cert_days_left"] > 300
    text = relay.cli("status")
    assert f"inbox.{IDLE}" in text.stdout and "parked 1" in text.stdout


def _alerts(relay: Relay) -> list[dict[str, str]]:
    out = []
    for line in relay.log_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") in ("alert", "alert cleared") and event.get("hub") == "H41":
            out.append(event)
    return out


def test_queue_alerts_are_logged(relay: Relay) -> None:
    """The hub worker watches its queues: the idle inbox over its thresholds (its depth, and the age
    of its oldest message, ``inbox_age_seconds``: 2) and the parked rejection each raise one
    ``alert`` log event of each kind (not one per check)."""
    expected = {("inbox-backlog", f"inbox.{IDLE}"), ("inbox-age", f"inbox.{IDLE}"), ("parked", "parking")}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        raised = {(a["kind"], a["subject"]) for a in _alerts(relay) if a["event"] == "alert"}
        if expected <= raised:
            break
        time.sleep(0.5)
    assert expected <= raised
    time.sleep(1.5)  # three more checks: still one event each
    again = [a for a in _alerts(relay) if a["event"] == "alert" and a["subject"] == f"inbox.{IDLE}"]
    assert sorted(a["kind"] for a in again) == ["inbox-age", "inbox-backlog"]
    assert "3 message(s) wait in the inbox of" in next(a for a in again if a["kind"] == "inbox-backlog")["detail"]


def test_dlq_replay_delivers_once(relay: Relay) -> None:
    """A document parked because the store stayed unavailable is listed with its code, replayed by an
    operator once the store is back, delivered exactly once; a second replay finds nothing."""
    holder = relay.lock_store("H41", 3.0)
    doc = relay.document(SENDER, [RECIPIENT], subject="sẽ phát lại")
    digest = hashlib.sha256(doc).hexdigest()
    relay.client(SENDER).send(doc)
    holder.join()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = json.loads(relay.cli("dlq", "list", "--hub", "H41", "--json").stdout)
        mine = [p for p in listed if p["digest"] == digest]
        if mine:
            break
        time.sleep(0.5)
    assert [p["code"] for p in mine] == ["RETRY_EXHAUSTED"]
    shown = relay.cli("dlq", "show", "H41", digest[:16])
    assert shown.returncode == 0 and "RETRY_EXHAUSTED" in shown.stdout and "sẽ phát lại" in shown.stdout
    first = relay.cli("dlq", "replay", "H41", "--digest", digest)
    assert "replayed 1 message(s)" in first.stdout, first.stderr
    second = relay.cli("dlq", "replay", "H41", "--digest", digest)
    assert "replayed 0 message(s)" in second.stdout
    assert [i.body for i in relay.take(RECIPIENT, 1, accept=lambda i: i.body == doc)] == [doc]
    relay.wait_idle()
    assert relay.take(RECIPIENT, 1, timeout=3, accept=lambda i: i.body == doc) == []


def test_hub_metrics(relay: Relay) -> None:
    """A hub worker started with --metrics-port serves Prometheus counters of what it handled, its
    hop latency histogram and its certificate gauge."""
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay.stop_workers("H41")
    relay.start_worker("H41", "--metrics-port", str(port))
    doc = relay.document(SENDER, [RECIPIENT], subject="đo đếm")
    relay.client(SENDER).send(doc)
    assert len(relay.take(RECIPIENT, 1, accept=lambda i: i.body == doc)) == 1
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'lienthong_messages_total{code="",hub="H41",outcome="delivered"} 1.0' in text
    assert 'lienthong_hop_seconds_count{hub="H41"} 1.0' in text
    assert 'lienthong_certificate_days_left{hub="H41"}' in text
    assert f'lienthong_queue_messages{{hub="H41",queue="inbox.{IDLE}"}} 3.0' in text
    assert f'lienthong_alert{{hub="H41",kind="inbox-backlog",subject="inbox.{IDLE}"}} 1.0' in text


def test_dlq_purge_needs_yes(relay: Relay) -> None:
    """Purging is explicit: without --yes it is a USAGE error; with it the parked rejection goes away."""
    refused = relay.cli("dlq", "purge", "H41", "--code", "RECIPIENT_UNKNOWN")
    assert refused.returncode == 2 and refused.stderr.startswith("ERROR USAGE:")
    done = relay.cli("dlq", "purge", "H41", "--code", "RECIPIENT_UNKNOWN", "--yes")
    assert "purged 1 message(s)" in done.stdout
    listed = json.loads(relay.cli("dlq", "list", "--hub", "H41", "--json").stdout)
    assert [p for p in listed if p["code"] == "RECIPIENT_UNKNOWN"] == []
    assert listed == []
    deadline = time.monotonic() + 10  # the watch notices the parking queue is empty again
    while time.monotonic() < deadline and not any(
            a["event"] == "alert cleared" and a["kind"] == "parked" for a in _alerts(relay)):
        time.sleep(0.5)
    assert any(a["event"] == "alert cleared" and a["kind"] == "parked" for a in _alerts(relay))
