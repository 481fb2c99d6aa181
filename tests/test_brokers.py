"""The brokers themselves: the open files the set-up script gives the node, `lienthong status`
warning when a broker nears its limits, and a second node of its own (another operator's broker)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from broker.core.deployment import Alerts
from broker.core.errors import AccessRefused, ConfigError, TransientError
from broker.relay import devpki
from broker.relay.amqp import blocking
from broker.relay.layout import Queue
from broker.relay.provision import Management, q
from tests import services
from tests.relay import ROOT, Relay

pytestmark = pytest.mark.broker

RELAY = {"settings": {"alerts": {"broker_share": 0.0001}}}  # any use of the broker is "near its limits"
RABBITMQ_NOFILE = 65536


def _ceiling() -> int:
    """The most open files root may give a process here: 65,536 unless root may not raise its hard
    limit (no CAP_SYS_RESOURCE, as in some containers), then that hard limit."""
    probe = subprocess.run([sys.executable, "-c", "import resource as r; r.setrlimit(r.RLIMIT_NOFILE, "
                            f"({RABBITMQ_NOFILE}, {RABBITMQ_NOFILE}))"], capture_output=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return RABBITMQ_NOFILE if probe.returncode == 0 else min(RABBITMQ_NOFILE, hard)


def _local_node(rabbitmq_urls: tuple[str, str]) -> dict[str, object]:
    if services.docker_available() or urlsplit(rabbitmq_urls[0]).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the broker is not this machine's node of scripts/ensure-rabbitmq.sh")
    nodes = Management(rabbitmq_urls[1]).get("/api/nodes")
    assert len(nodes) == 1
    return dict(nodes[0])


def test_the_broker_gets_the_open_files_rabbitmq_asks_for(rabbitmq_urls: tuple[str, str]) -> None:
    """The node scripts/ensure-rabbitmq.sh started may open 65,536 files (RabbitMQ's production
    figure; su's session would give it 1,024), by its own account (the management API's
    ``fd_total``) and by the kernel's (/proc/PID/limits).  Where root itself may not go that high
    (no CAP_SYS_RESOURCE), the node must have all that root may give."""
    node = _local_node(rabbitmq_urls)
    want = _ceiling()
    limits = Path(f"/proc/{node['os_pid']}/limits").read_text()
    soft = int(next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")))
    assert soft >= want, f"the broker may open {soft} files, not {want}"
    assert int(str(node["fd_total"])) >= want
    limits_file = Path("/etc/security/limits.d/lienthong-rabbitmq.conf")
    if want == RABBITMQ_NOFILE:
        assert f"rabbitmq hard nofile {RABBITMQ_NOFILE}" in limits_file.read_text()


def test_ensure_rabbitmq_run_again_restarts_nothing(rabbitmq_urls: tuple[str, str]) -> None:
    """scripts/ensure-rabbitmq.sh run on a broker it configured changes nothing and restarts nothing
    (the same node process, still up)."""
    before = _local_node(rabbitmq_urls)
    done = subprocess.run([str(ROOT / "scripts" / "ensure-rabbitmq.sh")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "restarting" not in done.stderr and "writing" not in done.stderr
    after = _local_node(rabbitmq_urls)
    assert after["os_pid"] == before["os_pid"]
    # the management API refreshes a node's figures every few seconds: wait for the next ones
    deadline = time.monotonic() + 30
    while int(str(after["uptime"])) == int(str(before["uptime"])) and time.monotonic() < deadline:
        time.sleep(1)
        after = _local_node(rabbitmq_urls)
    assert after["os_pid"] == before["os_pid"]
    assert int(str(after["uptime"])) > int(str(before["uptime"]))


def test_the_rule_of_a_broker_near_its_limits() -> None:
    """A figure at or above ``broker_share`` of its limit is named; one below it, or with no limit
    reported, is not."""
    node = {"fd_used": 80, "fd_total": 100, "sockets_used": 79, "sockets_total": 100, "proc_used": 900,
            "proc_total": None}
    assert Alerts(broker_share=0.8).broker_near_limits(node) == [("fd", 80, 100)]
    assert Alerts(broker_share=0.5).broker_near_limits(node) == [("fd", 80, 100), ("sockets", 79, 100)]
    assert Alerts().broker_near_limits({"fd_used": 104, "fd_total": 20000}) == []


def test_status_warns_when_the_broker_nears_its_limits(relay: Relay) -> None:
    """With ``settings.alerts.broker_share`` set low, `lienthong status` warns on every hub that its
    broker uses that share of its file descriptors (figures from the broker's own count), in
    English and in Vietnamese; with the default share (0.8) this broker is far from its limits and
    there is no such warning."""
    out = relay.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    node = Management(relay.settings.mgmt_url).get("/api/nodes")[0]
    for hub in json.loads(out.stdout):
        fd = [w for w in hub["warnings"] if "file descriptors" in w]
        assert len(fd) == 1 and fd[0].startswith(f"broker {node['name']} uses ")
        assert fd[0].endswith(f" of its {node['fd_total']} file descriptors")
    vi = relay.cli("status", "--lang", "vi")
    assert vi.returncode == 0, vi.stderr
    assert f"broker {node['name']} đang dùng" in vi.stdout and "bộ mô tả tệp" in vi.stdout
    raw = yaml.safe_load(relay.settings.topology.read_text(encoding="utf-8"))
    raw["settings"]["alerts"].pop("broker_share")
    default = relay.settings.topology.with_name("default-alerts.yaml")
    default.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    out = relay.cli("status", "--json", env={"LIENTHONG_TOPOLOGY": str(default)})
    assert out.returncode == 0, out.stderr
    assert not [w for hub in json.loads(out.stdout) for w in hub["warnings"] if w.startswith("broker ")]


def test_a_broker_share_out_of_range_stops_the_load(tmp_path: Path) -> None:
    """``broker_share`` is a share: 0 or above 1 stops the topology's load with CONFIG naming it."""
    from broker.core.topology import Topology

    raw = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    for wrong in (0, 1.5):
        raw["settings"]["alerts"]["broker_share"] = wrong
        with pytest.raises(ConfigError, match="broker_share"):
            Topology.from_dict(raw)


# -- a second node: another operator's broker -------------------------------------------------------


def test_the_second_broker_is_a_broker_of_its_own(second_broker: services.Broker,
                                                  rabbitmq_urls: tuple[str, str]) -> None:
    """The second node is in no cluster (each node sees only itself), has its own admin account
    (each admin is refused by the other node's management API), no guest account, and listens
    only with TLS for AMQP."""
    theirs, ours = Management(second_broker.mgmt_url), Management(rabbitmq_urls[1])
    there = {n["name"] for n in theirs.get("/api/nodes")}
    here = {n["name"] for n in ours.get("/api/nodes")}
    assert there == {f"{second_broker.name}@localhost"} and not there & here
    assert theirs.user != ours.user
    for url, other in ((second_broker.mgmt_url, rabbitmq_urls[1]), (rabbitmq_urls[1], second_broker.mgmt_url)):
        crossed = urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[0] + "@"
                                         + urlsplit(other).netloc.rpartition("@")[2]).geturl()
        with pytest.raises(ConfigError, match="HTTP 401"):
            Management(crossed).get("/api/overview")
    assert "guest" not in {u["name"] for u in theirs.get("/api/users")}
    protocols = {listener["protocol"] for listener in theirs.get("/api/overview")["listeners"]}
    assert "amqp/ssl" in protocols and "amqp" not in protocols


def test_an_account_of_the_transport_ca_logs_in_on_the_second_broker(second_broker: services.Broker,
                                                                     rabbitmq_urls: tuple[str, str],
                                                                     tmp_path: Path) -> None:
    """An account with a client certificate from the transport CA logs in on the second node over
    TLS (EXTERNAL, no password), uses its rights there (declares a queue, publishes, takes the
    message back), and is refused by the default node, where it has no account; a certificate of
    another CA is refused by the second node."""
    m = Management(second_broker.mgmt_url)
    vhost, user = f"lt{uuid.uuid4().hex[:8]}.probe", f"lt{uuid.uuid4().hex[:8]}.account"
    m.put(f"/api/vhosts/{q(vhost)}", {})
    m.put(f"/api/users/{q(user)}", {"password_hash": "", "tags": ""})
    m.put(f"/api/permissions/{q(vhost)}/{q(user)}", {"configure": ".*", "write": ".*", "read": ".*"})
    try:
        ca = services.transport_ca()
        account = (tmp_path / "key.pem", tmp_path / "cert.pem")
        devpki.write_pair(account, devpki.issue_account(devpki.load_ca(ca / "ca.pem", ca / "ca.key"), user))
        stranger = (tmp_path / "stranger-key.pem", tmp_path / "stranger-cert.pem")
        devpki.write_pair(stranger, devpki.issue_account(devpki.make_root("another CA"), user))

        def url(base: str, material: tuple[Path, Path]) -> str:
            return (f"{base.rstrip('/')}/{q(vhost)}?cacertfile={ca / 'ca.pem'}&certfile={material[1]}"
                    f"&keyfile={material[0]}&auth_mechanism=external").replace("amqps://", f"amqps://{q(user)}@")

        there = url(second_broker.amqp_url, account)
        blocking.declare(there, [Queue("probe", {"x-queue-type": "quorum"})])
        blocking.publish(there, "", "probe", b"across brokers", message_id="m1", user_id=user)
        got: list[bytes] = []
        assert blocking.fetch(there, "probe", lambda r: got.append(r.body) is None, wait=5) == 1
        assert got == [b"across brokers"]
        with pytest.raises(AccessRefused):
            blocking.queue_depth(url(rabbitmq_urls[0], account), "probe")
        with pytest.raises(TransientError):  # the TLS handshake fails: the node does not know that CA
            blocking.queue_depth(url(second_broker.amqp_url, stranger), "probe")
    finally:
        m.request("DELETE", f"/api/vhosts/{q(vhost)}")
        m.request("DELETE", f"/api/users/{q(user)}")
