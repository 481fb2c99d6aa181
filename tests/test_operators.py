"""One network of two operators: Cao Bằng's hubs (H14, H14-D31) run on a broker of their own,
set up by their operator's admin account alone; the national hub and Nghệ An (H41) on the default
broker.  Documents, receipts, status messages and checkpoint witnesses cross between the two; when
Cao Bằng's broker is away the rest of the network goes on, and what was meant for Cao Bằng waits
at the national hub and arrives once, when its broker is back."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable

import pytest

from broker.core import receipts
from broker.core.edxml import Organ, ResponseFor, build_status, read
from broker.core.errors import AccessRefused
from broker.core.parsing import parse
from broker.core.signer import sign
from broker.core.trust import TrustStore
from broker.core.wire import inbox_queue
from broker.relay import layout
from broker.relay.amqp import blocking
from broker.relay.provision import Management, q
from tests import services
from tests.relay import Relay

pytestmark = pytest.mark.broker

N_COMMUNE, N_PROVINCE = "000.00.51.H41", "000.00.00.H41"  # Nghệ An, on the default broker
C_COMMUNE, C_PROVINCE = "001.00.31.H14", "000.00.00.H14"  # Cao Bằng, on its own broker
VPCP = "000.00.00.G22"  # at the national hub
CAO_BANG = ("H14", "H14-D31")


RELAY = {"on_second_broker": CAO_BANG, "env": {"LIENTHONG_CHECKPOINT_SECONDS": "1"}}


def _until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.3)


def _arrivals(relay: Relay, agency: str, doc: bytes, about: bytes,
              timeout: float = 60.0) -> tuple[list[bytes], dict[str, receipts.Receipt]]:
    """From ``agency``'s inbox, in one pass (what is not wanted is taken and dropped): the copies
    of ``doc`` and the hub-signed receipts about the bytes ``about``, by kind."""
    trust, digest = TrustStore.load(relay.settings.pki), hashlib.sha256(about).hexdigest()

    def about_it(item: object) -> bool:
        return item.kind == "receipt" and receipts.verify(item.body, trust).receipt.document_sha256 == digest

    got = relay.take(agency, 3, timeout=timeout, accept=lambda i: about_it(i) or i.body == doc)
    return ([i.body for i in got if i.kind != "receipt"],
            {r.kind: r for r in (receipts.verify(i.body, trust).receipt for i in got if i.kind == "receipt")})


def test_each_operator_holds_only_its_own_hubs(relay: Relay, rabbitmq_urls: tuple[str, str],
                                               second_broker: services.Broker) -> None:
    """Each broker has the vhosts and hub accounts of its own operator's hubs, none of the
    other's; each worker was given its own operator's admin account only."""
    names = relay.names
    for m, mine in ((Management(rabbitmq_urls[1]), {"national", "H41"}),
                    (Management(second_broker.mgmt_url), set(CAO_BANG))):
        vhosts = {v["name"] for v in m.get("/api/vhosts?columns=name")}
        users = {u["name"] for u in m.get("/api/users?columns=name")}
        for hub in relay.topology.hubs:
            assert (names.vhost(hub) in vhosts) == (hub in mine), (m.base, hub)
            assert (names.hub_user(hub) in users) == (hub in mine), (m.base, hub)
    assert {relay.admins[h] for h in CAO_BANG} == {second_broker.mgmt_url}
    assert {relay.admins[h] for h in ("national", "H41")} == {rabbitmq_urls[1]}
    # the link account a neighbour uses to publish into H14 exists on H14's broker (and only there)
    assert names.link_user("national") in {u["name"] for u in Management(second_broker.mgmt_url).get("/api/users")}
    assert names.link_user("national") in {p["user"] for p in Management(second_broker.mgmt_url).get(
        f"/api/vhosts/{q(names.vhost('H14'))}/permissions")}


def test_documents_and_receipts_cross_both_ways(relay: Relay) -> None:
    """Nghệ An's commune to Cao Bằng's commune and back: each delivered once, bytes unchanged,
    and each sender gets its hub's 'accepted' and the far hub's 'delivered' receipt."""
    there = relay.document(N_COMMUNE, [C_COMMUNE], subject="Sang Cao Bằng")
    back = relay.document(C_COMMUNE, [N_COMMUNE], subject="Về Nghệ An")
    relay.client(N_COMMUNE).send(there)
    relay.client(C_COMMUNE).send(back)
    docs, got = _arrivals(relay, C_COMMUNE, there, about=back)
    assert docs == [there]
    assert (got["accepted"].hub, got["delivered"].hub) == ("H14-D31", "H41")
    docs, got = _arrivals(relay, N_COMMUNE, back, about=there)
    assert docs == [back]
    assert (got["accepted"].hub, got["delivered"].hub) == ("H41", "H14-D31")
    relay.wait_idle()
    assert relay.documents_waiting(C_COMMUNE) == [] and relay.documents_waiting(N_COMMUNE) == []


def test_a_status_message_goes_back_across_operators(relay: Relay) -> None:
    """The recipient's 'received' status (03) about a document reaches its sender on the other
    operator's broker."""
    doc = relay.document(VPCP, [C_PROVINCE])
    relay.client(VPCP).send(doc)
    assert [i.body for i in relay.take(C_PROVINCE, 1, timeout=60, accept=lambda i: i.body == doc)] == [doc]
    status = sign(build_status(Organ(C_PROVINCE, relay.topology.agency(C_PROVINCE).name),
                               ResponseFor(VPCP, read(parse(doc)).document_id), "03"), relay.key(C_PROVINCE))
    relay.client(C_PROVINCE).send(status)
    assert [i.body for i in relay.take(VPCP, 1, timeout=60, accept=lambda i: i.body == status)] == [status]


def test_checkpoints_are_witnessed_across_operators(relay: Relay) -> None:
    """The national hub witnesses H14's checkpoints and H14 the national hub's: an auditor with
    both logs finds them intact, each with witnessed checkpoints, and nothing older than 5 s
    outside a witnessed checkpoint (the newest entries, written since, are the tail)."""
    doc = relay.document(N_PROVINCE, [C_PROVINCE])
    relay.client(N_PROVINCE).send(doc)
    relay.take(C_PROVINCE, 1, timeout=60, accept=lambda i: i.body == doc)
    out: list[str] = []

    def witnessed() -> bool:
        done = relay.cli("audit", "verify-log", "--hub", "H14", "--hub", "national", "--witness-within", "5")
        out[:] = [done.stdout + done.stderr]
        counts = re.findall(r"^(\S+) .* (\d+) witnessed .*intact$", done.stdout, re.MULTILINE)
        return done.returncode == 0 and sorted(h for h, n in counts if int(n) > 0) == ["H14", "national"]

    deadline = time.monotonic() + 60
    while not witnessed():
        assert time.monotonic() < deadline, out[0]
        time.sleep(0.5)
    assert "not checked" not in out[0], out[0]


def test_with_one_broker_away_the_rest_goes_on_and_its_mail_waits(relay: Relay,
                                                                  second_broker: services.Broker) -> None:
    """Cao Bằng's broker is stopped.  Nghệ An and the national hub go on exchanging documents;
    'lienthong status' (the other operator's admin) says the broker cannot be read and that
    copies wait for H14; the documents for Cao Bằng wait in the national hub's out.H14.  Once
    the broker is back each arrives once, and its sender gets the 'delivered' receipt."""
    waiting = [relay.document(N_COMMUNE, [C_COMMUNE], subject=f"Chờ {n}") for n in range(3)]
    second_broker.stop()
    try:
        for doc in waiting:
            relay.client(N_COMMUNE).send(doc)
        for sender, recipient in ((N_COMMUNE, VPCP), (VPCP, N_PROVINCE)):
            doc = relay.document(sender, [recipient])
            relay.client(sender).send(doc)
            got = relay.take(recipient, 1, timeout=60, accept=lambda i, d=doc: i.body == d)
            assert [i.body for i in got] == [doc]
        _until(lambda: relay.depth("national", "out.H14") == len(waiting), "the documents wait in out.H14")

        seen: dict[str, dict] = {}

        def status_says_so() -> bool:  # the management API's figures are a few seconds old
            done = relay.cli("status", "--json")
            assert done.returncode == 0, done.stderr
            seen.update((h["hub"], h) for h in json.loads(done.stdout))
            return {o["name"]: o["messages"] for o in seen["national"]["outbound"]} == {
                "out.H14": len(waiting), "out.H41": 0}

        _until(status_says_so, "status shows what waits for H14", timeout=30)
        assert seen["H14"]["unreadable"] and seen["H14-D31"]["unreadable"]
        assert not seen["national"]["unreadable"] and not seen["H41"]["unreadable"]
        assert any("H14" in w for w in seen["national"]["warnings"]), seen["national"]["warnings"]
    finally:
        second_broker.start()

    arrived = relay.take(C_COMMUNE, len(waiting), timeout=120, accept=lambda i: i.body in waiting)
    assert sorted(i.body for i in arrived) == sorted(waiting)
    trust = TrustStore.load(relay.settings.pki)
    digests = {hashlib.sha256(d).hexdigest() for d in waiting}

    def about_them(item: object) -> bool:
        return item.kind == "receipt" and receipts.verify(item.body, trust).receipt.document_sha256 in digests

    kinds = sorted((r.document_sha256, r.kind) for r in (
        receipts.verify(i.body, trust).receipt for i in relay.take(N_COMMUNE, 2 * len(waiting), timeout=120,
                                                                   accept=about_them)))
    assert kinds == sorted((d, k) for d in digests for k in ("accepted", "delivered"))
    _until(lambda: relay.depth("national", "out.H14") == 0, "out.H14 is empty")
    relay.wait_idle()
    assert relay.documents_waiting(C_COMMUNE) == [], "a document for Cao Bằng arrived twice"
    assert "link-down" in relay.log_text()


def test_the_link_account_of_another_operator_cannot_read_mine(relay: Relay) -> None:
    """The account the national hub publishes into H14 with may publish there and nothing more:
    reading an inbox of H14's agencies with it is refused."""
    url = layout.account_url(relay.topology, "H14", relay.settings.keys.hub_account("national", "link"),
                             relay.settings.keys.broker_ca)
    with pytest.raises(AccessRefused):
        blocking.fetch(url, inbox_queue(C_PROVINCE), lambda r: False, wait=0.5)
