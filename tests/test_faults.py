"""Transient failures on a real relay: state store locked, broker restarted, limits from configuration."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from tests.relay import Relay

pytestmark = pytest.mark.broker

SENDER, RECIPIENT = "000.00.51.H41", "000.00.52.H41"  # both on hub H41


RELAY = {"env": {"LIENTHONG_SQLITE_TIMEOUT": "0.3"}, "settings": {"retry_tiers_ms": [300, 600], "max_bytes": 200_000}}


def test_store_briefly_unavailable_is_retried(relay: Relay) -> None:
    """While the state store is locked the hub sends the message through its retry tiers; once the
    store is back the document is delivered, once."""
    relay.take(RECIPIENT, 1, timeout=2)  # settle: the relay is up
    holder = relay.lock_store("H41", 1.0)
    doc = relay.document(SENDER, [RECIPIENT], subject="store locked")
    relay.client(SENDER).send(doc)
    holder.join()
    assert [i.body for i in relay.take(RECIPIENT, 1, timeout=30, accept=lambda i: i.body == doc)] == [doc]
    assert "transient failure" in relay.log_text()
    relay.wait_idle()
    assert relay.documents_waiting(RECIPIENT) == []


def test_store_unavailable_too_long_is_parked(relay: Relay) -> None:
    """A store that stays unavailable through every retry tier: the message is parked with
    RETRY_EXHAUSTED (nothing is dropped), and never delivered."""
    holder = relay.lock_store("H41", 6.0)
    doc = relay.document(SENDER, [RECIPIENT], subject="store down")
    digest = hashlib.sha256(doc).hexdigest()
    relay.client(SENDER).send(doc)
    parked = [r for r in relay.drain("H41", "parking", timeout=20) if hashlib.sha256(r.body).hexdigest() == digest]
    holder.join()
    assert len(parked) == 1
    assert parked[0].headers["lt-code"] == "RETRY_EXHAUSTED"
    assert relay.take(RECIPIENT, 1, timeout=3, accept=lambda i: i.body == doc) == []


def test_size_limit_from_configuration(relay: Relay) -> None:
    """The topology's max_bytes (200 kB here) applies at the hub: a bigger document is rejected
    XML_TOO_LARGE back to the sender."""
    from broker.core import receipts
    from broker.core.trust import TrustStore
    big = relay.document(SENDER, [RECIPIENT], size=300_000)
    digest = hashlib.sha256(big).hexdigest()
    relay.client(SENDER).send(big)
    trust = TrustStore.load(relay.settings.pki)
    got = relay.take(SENDER, 1, accept=lambda i: i.kind == "receipt" and
                     receipts.verify(i.body, trust).receipt.document_sha256 == digest)
    assert len(got) == 1
    assert receipts.read_bytes(got[0].body).code == "XML_TOO_LARGE"


def _local_rabbitmqctl(relay: Relay) -> bool:
    host = urlsplit(relay.topology.hubs["H41"].amqp_url.split()[0]).hostname
    return shutil.which("rabbitmqctl") is not None and host in ("127.0.0.1", "localhost")


def test_workers_survive_broker_restart(relay: Relay) -> None:
    """RabbitMQ is stopped and started again under the running hubs; they reconnect by themselves
    and the next document is delivered (messages taken before the restart are not lost)."""
    if not _local_rabbitmqctl(relay):
        if os.environ.get("CI"):
            pytest.fail("the broker restart test needs the local broker and rabbitmqctl")
        pytest.skip("broker is not local")
    before = relay.document(SENDER, [RECIPIENT], subject="before restart")
    relay.client(SENDER).send(before)
    assert len(relay.take(RECIPIENT, 1, accept=lambda i: i.body == before)) == 1
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    time.sleep(2)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)
    started = time.monotonic()
    after = relay.document(SENDER, [RECIPIENT], subject="after restart")
    deadline = time.monotonic() + 60
    while True:  # the broker may refuse logins for a moment after start_app
        try:
            relay.client(SENDER).send(after)
            break
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert len(relay.take(RECIPIENT, 1, timeout=90, accept=lambda i: i.body == after)) == 1
    assert "reconnecting" in relay.log_text()
    print(f"delivered {time.monotonic() - started:.1f} s after the broker came back")
