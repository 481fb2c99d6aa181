"""Moves the broker makes on its own (a retry tier's expiry into ingress, the delivery limit's move
into parking) are at-least-once, and `broker setup` makes them so on a running deployment in place."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest

from broker.core import wire
from broker.relay import layout
from broker.relay.amqp import params
from broker.relay.provision import Management, q
from tests.relay import Relay

pytestmark = pytest.mark.broker
HUB = "H41"
TIERS_MS = [1500, 3000, 6000]


@pytest.fixture()
def idle_relay(rabbitmq_urls: tuple[str, str], tmp_path: Path) -> Iterator[Relay]:
    """A relay set up with no workers running: messages stay where the broker puts them."""
    r = Relay(tmp_path, *rabbitmq_urls, workers=0, settings={"retry_tiers_ms": TIERS_MS})
    yield r
    r.close()


def _channel(relay: Relay) -> pika.adapters.blocking_connection.BlockingChannel:
    ch = pika.BlockingConnection(params.parameters(relay.hub_url(HUB))).channel()
    ch.confirm_delivery()
    return ch


def _publish(ch: pika.adapters.blocking_connection.BlockingChannel, exchange: str, key: str, mid: str) -> None:
    ch.basic_publish(exchange, key, mid.encode(), pika.BasicProperties(message_id=mid, delivery_mode=2))


def _ids(relay: Relay, queue: str, count: int, timeout: float = 30.0) -> list[str]:
    return sorted(r.message_id for r in relay.drain(HUB, queue, count=count, timeout=timeout))


def _vhost(relay: Relay) -> str:
    return q(relay.names.vhost(HUB))


def test_queues_that_dead_letter_are_at_least_once(idle_relay: Relay) -> None:
    """After setup, in every hub's vhost, ingress and each retry tier are governed by the
    at-least-once policy; queues that never dead-letter (inboxes, parking) are left alone."""
    m = Management(idle_relay.settings.mgmt_url)
    for hub in idle_relay.topology.hubs:
        policies = m.get(f"/api/policies/{q(idle_relay.names.vhost(hub))}")
        for queue in ["ingress", *(f"retry.r{ms}ms" for ms in TIERS_MS)]:
            effective = layout.effective_policy(policies, queue)
            assert effective is not None and effective["name"] == layout.RELIABILITY_POLICY, (hub, queue)
            assert effective["definition"] == {"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}
        for queue in ["parking", "unroutable", "inbox.000.00.51.H41"]:
            assert layout.effective_policy(policies, queue) is None


def _local_broker(relay: Relay) -> bool:
    host = urlsplit(relay.topology.hubs[HUB].amqp_url.split()[0]).hostname
    return shutil.which("rabbitmqctl") is not None and host in ("127.0.0.1", "localhost")


def test_messages_held_in_every_retry_tier_and_parking_survive_a_broker_stop(idle_relay: Relay) -> None:
    """At the moment of `rabbitmqctl stop_app` messages are held everywhere a broker move can
    lose them: expired from each retry tier and past ingress' delivery limit while their target
    could not take them (dead-letters in transit), resting in each retry tier, and in parking.
    After `start_app` every one arrives where it was going, once.  (With the quorum queues'
    default at-most-once dead-lettering, the ones in transit are dropped: this test fails.)"""
    relay = idle_relay
    if not _local_broker(relay):
        if os.environ.get("CI"):
            pytest.fail("this test stops the broker: it needs the local broker and rabbitmqctl")
        pytest.skip("broker is not local")
    tiers = [t for t, _ in layout.retry_tiers(relay.topology)]
    ch = _channel(relay)
    # 1. two messages past the delivery limit of ingress while parking takes nothing
    for i in range(2):
        _publish(ch, wire.EX_INGRESS, "", f"over-limit-{i}")
    ch.queue_unbind(wire.Q_PARKING, wire.EX_PARKING)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, _, _ = ch.basic_get(wire.Q_INGRESS, auto_ack=False)
        if method is None:
            if ch.queue_declare(wire.Q_INGRESS, passive=True).method.message_count == 0:
                break
            continue
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert ch.queue_declare(wire.Q_INGRESS, passive=True).method.message_count == 0
    # 2. one message per retry tier, expired while ingress (and its alternate exchange) take nothing
    ch.queue_unbind(wire.Q_INGRESS, wire.EX_INGRESS)
    ch.queue_unbind(wire.Q_UNROUTABLE, wire.EX_UNROUTABLE)
    for tier in tiers:
        _publish(ch, wire.EX_RETRY, tier, f"expired-{tier}")
    time.sleep(max(TIERS_MS) / 1000 + 1.5)
    for queue in [wire.Q_INGRESS, wire.Q_PARKING, wire.Q_UNROUTABLE, *map(wire.retry_queue, tiers)]:
        assert ch.queue_declare(queue, passive=True).method.message_count == 0, queue
    # 3. messages resting in each retry tier and in parking
    for tier in tiers:
        _publish(ch, wire.EX_RETRY, tier, f"resting-{tier}")
    _publish(ch, "", wire.Q_PARKING, "parked")
    # the targets come back, and at once the broker stops
    ch.queue_bind(wire.Q_PARKING, wire.EX_PARKING)
    ch.queue_bind(wire.Q_INGRESS, wire.EX_INGRESS)
    ch.queue_bind(wire.Q_UNROUTABLE, wire.EX_UNROUTABLE)
    ch.connection.close()
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True, timeout=120)
    expect_ingress = sorted([f"expired-{t}" for t in tiers] + [f"resting-{t}" for t in tiers])
    expect_parking = sorted(["over-limit-0", "over-limit-1", "parked"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (relay.depth(HUB, wire.Q_INGRESS) >= len(expect_ingress)
                    and relay.depth(HUB, wire.Q_PARKING) >= len(expect_parking)):
                break
        except Exception:  # noqa: BLE001 - the broker may refuse logins for a moment after start_app
            pass
        time.sleep(0.5)
    assert _ids(relay, wire.Q_INGRESS, len(expect_ingress) + 1, timeout=3) == expect_ingress
    assert _ids(relay, wire.Q_PARKING, len(expect_parking) + 1, timeout=3) == expect_parking
    assert _ids(relay, wire.Q_UNROUTABLE, 1, timeout=1) == []


def test_setup_upgrades_an_old_deployment_in_place(idle_relay: Relay) -> None:
    """A deployment set up before the at-least-once policy (its queues declared with the same
    arguments as ever) holding messages in ingress, a retry tier and parking: `broker setup` run
    again adds the policy and every message is still there."""
    relay = idle_relay
    m = Management(relay.settings.mgmt_url)
    for hub in relay.topology.hubs:
        m.request("DELETE", f"/api/policies/{q(relay.names.vhost(hub))}/{layout.RELIABILITY_POLICY}")
    ch = _channel(relay)
    _publish(ch, wire.EX_INGRESS, "", "waiting")
    _publish(ch, "", wire.Q_PARKING, "parked")
    _publish(ch, "", wire.retry_queue(layout.retry_tiers(relay.topology)[-1][0]), "retrying")
    ch.connection.close()
    done = relay.cli("broker", "setup")
    assert done.returncode == 0, done.stderr
    assert "4 policies" in done.stdout
    policies = m.get(f"/api/policies/{_vhost(relay)}")
    assert layout.effective_policy(policies, "ingress")["name"] == layout.RELIABILITY_POLICY  # type: ignore[index]
    assert _ids(relay, wire.Q_PARKING, 2, timeout=3) == ["parked"]
    assert sorted(_ids(relay, wire.Q_INGRESS, 2, timeout=10)) == ["retrying", "waiting"]


def test_setup_refuses_a_policy_that_would_shadow_at_least_once(idle_relay: Relay) -> None:
    """An operator's policy of higher priority on ingress would silently replace lienthong's:
    `broker setup` refuses with CONFIG and a sentence naming it, instead of running at-most-once."""
    relay = idle_relay
    m = Management(relay.settings.mgmt_url)
    m.put(f"/api/policies/{_vhost(relay)}/ops-limits",
          {"pattern": "^ingress$", "definition": {"max-length": 1000000}, "priority": 500, "apply-to": "queues"})
    done = relay.cli("broker", "setup")
    assert done.returncode != 0
    assert "ERROR CONFIG" in done.stderr and "'ops-limits' (priority 500)" in done.stderr
    assert "Traceback" not in done.stderr


class _Answers:
    """Canned management answers, for the pure decision of which brokers can dead-letter at-least-once."""

    base = "http://broker:15672"

    def __init__(self, version: str, flags: list[dict[str, str]]) -> None:
        self.answers = {"/api/overview": {"rabbitmq_version": version}, "/api/feature-flags": flags}

    def get(self, path: str) -> object:
        return self.answers[path]


@pytest.mark.parametrize(("version", "flags", "refused"), [
    ("3.10.8", [{"name": "stream_queue", "state": "enabled"}], None),
    ("4.1.0", [], None),  # later versions have no such flag: always on
    ("3.9.29", [{"name": "stream_queue", "state": "enabled"}], "needs RabbitMQ 3.10 or later"),
    ("3.10.8", [{"name": "stream_queue", "state": "disabled"}], "enable_feature_flag stream_queue"),
])
def test_setup_refuses_a_broker_that_cannot_dead_letter_at_least_once(version: str, flags: list[dict[str, str]],
                                                                       refused: str | None) -> None:
    """Before 3.10, or with the stream_queue feature flag off, RabbitMQ ignores the policy key and
    stays at-most-once: setup says so instead of pretending."""
    from broker.core.errors import ConfigError
    from broker.relay.provision import check_broker_supports_at_least_once

    if refused is None:
        check_broker_supports_at_least_once(_Answers(version, flags))  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError, match=refused):
            check_broker_supports_at_least_once(_Answers(version, flags))  # type: ignore[arg-type]
