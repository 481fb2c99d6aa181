"""`broker setup` at the nation's size: a few imports instead of one call per object, tried again
when the broker is busy, and a sentence with a stable code (never INTERNAL) when it cannot go on."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from broker.core import wire
from broker.core.errors import ConfigError, TransientError
from broker.core.topology import Topology
from broker.relay import definitions, layout, provision
from broker.relay.amqp import blocking
from broker.relay.provision import Management, apply, q
from tests import services
from tests.relay import ROOT


class _Answers(BaseHTTPRequestHandler):
    """Answers each request with the next status of ``plan`` (then 200), or not at all (0: holds
    the request past the client's timeout)."""

    plan: list[int] = []
    seen: list[str] = []

    def _answer(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        status = type(self).plan.pop(0) if type(self).plan else 200
        if status == 0:
            time.sleep(1.0)
            return
        body = b'{"ok": true}' if status == 200 else b'{"error": "x"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Management]:
    """A Management client of a local HTTP server that answers as ``_Answers.plan`` says, with short pauses."""
    monkeypatch.setattr(provision, "PAUSES", (0.05, 0.05, 0.05))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Answers.plan, _Answers.seen = [], []
    yield Management(f"http://admin:secret@127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def test_a_busy_broker_is_asked_again(api: Management) -> None:
    """A request that meets 503, then a timeout, then 500 is tried again after a pause each time,
    and its answer is returned."""
    _Answers.plan = [503, 0, 500]
    assert api.request("GET", "/api/overview", timeout=0.3) == {"ok": True}
    assert _Answers.seen == ["GET /api/overview"] * 4


def test_a_broker_busy_to_the_end_is_transient_with_a_sentence(api: Management) -> None:
    """After the last attempt the caller gets TRANSIENT with a sentence saying what was asked, how
    often, and what to look at; never a raw exception (the CLI would call that INTERNAL)."""
    _Answers.plan = [503] * 10
    with pytest.raises(TransientError, match=r"did not complete GET /api/nodes in 4 attempts .*file handles"):
        api.request("GET", "/api/nodes")
    assert len(_Answers.seen) == 4


def test_an_answer_is_not_asked_again(api: Management) -> None:
    """A 4xx is an answer (wrong account, unknown object): CONFIG at once, no second attempt; a
    DELETE that timed out and then finds nothing was done by the first attempt."""
    _Answers.plan = [401]
    with pytest.raises(ConfigError, match="HTTP 401"):
        api.request("GET", "/api/overview")
    assert len(_Answers.seen) == 1
    _Answers.plan = [0, 404]
    assert api.request("DELETE", "/api/vhosts/x", timeout=0.3) is None
    _Answers.plan = [404]
    with pytest.raises(ConfigError, match="HTTP 404"):
        api.request("DELETE", "/api/vhosts/y")


def test_an_amqp_handshake_that_never_ends_is_transient() -> None:
    """A broker that takes the TCP connection and never completes the handshake (a node out of file
    handles does this) makes pika raise its connector's timeout, which is no AMQPError: it becomes
    TRANSIENT with a sentence (it was INTERNAL).  The URL shortens pika's 15 s to 2."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(listener.accept()[0]) for _ in range(8)], daemon=True).start()
    url = (f"amqps://u:p@127.0.0.1:{listener.getsockname()[1]}/v?cacertfile={services.transport_ca() / 'ca.pem'}"
           "&stack_timeout=2")
    with pytest.raises(TransientError, match="cannot connect to the broker: Timeout"):
        with blocking.blocking(url):
            pass
    listener.close()


@pytest.mark.broker
def test_setup_on_an_independent_broker_reads_first_and_refuses_what_it_cannot_change(
        second_broker: services.Broker, tmp_path: Path) -> None:
    """The sample topology set up on the second node: every vhost, account, queue, exchange and
    binding, the admin's rights and the reliability policy.  Run again it imports nothing (it only
    reads).  A lost policy is put back, the queues left as they are; a queue that exists with other
    arguments stops the set-up with CONFIG naming it (an import would have left it so, silently)."""
    raw = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    raw.update(namespace=f"lt{uuid.uuid4().hex[:8]}", amqp_url=second_broker.amqp_url)
    topology = Topology.from_dict(raw)
    names, m = wire.names(topology), Management(second_broker.mgmt_url)
    try:
        counts = apply(topology, second_broker.mgmt_url)
        assert counts == {"vhosts": 4, "users": len(layout.users(topology)),
                          "permissions": len(layout.permissions(topology)),
                          "declarations": sum(len(layout.declarations(topology, h)) for h in topology.hubs),
                          "policies": 4}
        users = {u["name"] for u in m.get("/api/users?columns=name")}
        assert set(layout.users(topology)) <= users
        policy = layout.reliability_policy()
        for hub in topology.hubs:
            vhost = names.vhost(hub)
            assert not definitions.check_declared(vhost, layout.declarations(topology, hub),
                                                  *definitions._holds(m, vhost))
            assert {p["user"] for p in m.get(f"/api/vhosts/{q(vhost)}/permissions")} >= {m.user, names.hub_user(hub)}
            assert not definitions.import_vhost(m, vhost, layout.declarations(topology, hub), policy)
        assert definitions.import_accounts(
            m, [(names.vhost(h), "") for h in topology.hubs], layout.users(topology), layout.permissions(topology)) == 0

        h41 = names.vhost("H41")
        m.request("DELETE", f"/api/policies/{q(h41)}/{q(policy.name)}")
        assert apply(topology, second_broker.mgmt_url)["policies"] == 4
        assert [p["name"] for p in m.get(f"/api/policies/{q(h41)}")] == [policy.name]

        inbox = wire.inbox_queue("000.00.52.H41")
        m.request("DELETE", f"/api/queues/{q(h41)}/{q(inbox)}")
        m.put(f"/api/queues/{q(h41)}/{q(inbox)}", {"durable": True, "arguments": {"x-queue-type": "classic"}})
        with pytest.raises(ConfigError, match=f"queue '{inbox}' in vhost '{h41}' exists with arguments "
                                              r'\{"x-queue-type": "classic"\}, not \{"x-queue-type": "quorum"\}'):
            apply(topology, second_broker.mgmt_url)
    finally:
        for hub in topology.hubs:
            try:
                m.request("DELETE", f"/api/vhosts/{q(names.vhost(hub))}", timeout=120)
            except ConfigError:  # never made
                pass
        m.delete_users(layout.users(topology))
