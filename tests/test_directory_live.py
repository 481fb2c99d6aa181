"""Directory versions applied by running hubs on the real broker, without a restart: a new commune
sends and receives as soon as the version reaches its hub; a removed one's account stops while
what waits in its inbox stays; a merged commune's former code reaches the commune that replaced
it; an agency moved to another hub is delivered there.  The tests build on each other, one
version after another, as an operator's changes would."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.core import wire
from broker.core.errors import LienthongError
from broker.core.hoprecords import parse_record
from broker.core.topology import Topology
from broker.relay import devpki
from broker.relay.amqp import blocking
from broker.relay.store import open_store
from tests.relay import Relay

pytestmark = pytest.mark.broker

SENDER, NEIGHBOUR, FAR, MERGED, DISTRICT = ("000.00.51.H41", "000.00.52.H41", "001.00.31.H14", "002.00.31.H14",
                                           "000.00.31.H14")
NEW = "003.00.31.H14"
VERSIONS: dict[str, Any] = {"source": None, "version": 1}


def _source(relay: Relay) -> dict[str, Any]:
    if VERSIONS["source"] is None:
        VERSIONS["source"] = yaml.safe_load(Path(relay.settings.topology).read_text(encoding="utf-8"))
    return VERSIONS["source"]  # type: ignore[no-any-return]


def _publish(relay: Relay, source: dict[str, Any], tmp: Path) -> Topology:
    """Sign ``source`` as the next version, hand it to the national hub, wait until every hub runs
    it; the test's own view of the directory follows."""
    VERSIONS["version"] += 1
    version = VERSIONS["version"]
    path, signed = tmp / f"v{version}.yaml", tmp / f"v{version}.json"
    path.write_text(yaml.safe_dump(source, allow_unicode=True), encoding="utf-8")
    done = relay.cli("directory", "sign", str(path), "-o", str(signed), "--version", str(version))
    assert done.returncode == 0, done.stderr
    done = relay.cli("directory", "publish", str(signed))
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(_version(relay, h) == version for h in relay.topology.hubs):
            break
        time.sleep(0.3)
    assert {h: _version(relay, h) for h in relay.topology.hubs} == dict.fromkeys(relay.topology.hubs, version)
    relay.topology = Topology.from_dict(source)
    return relay.topology


def _version(relay: Relay, hub: str) -> int:
    store = open_store(relay.settings.state_url, hub=hub)
    try:
        versions = store.directory_versions(hub)
    finally:
        store.close()
    return versions[-1][0] if versions else 0


def test_a_new_commune_sends_and_receives_once_its_version_is_in_force(relay: Relay, tmp_path: Path) -> None:
    """A commune added to H14-D31 in version 2 gets its inbox and its account from its hub (made
    there with the operator's own admin account), takes a document from Nghệ An, sends one back,
    and the receipts of both come back."""
    source = _source(relay)
    source["agencies"].append({"organ_id": NEW, "name": "UBND xã Mới", "hub": "H14-D31", "level": "commune"})
    topology = Topology.from_dict(source)
    devpki.issue_agency(relay.settings.keys, topology, NEW, devpki.load_root(relay.settings.pki),
                        devpki.transport_ca(relay.settings.keys.transport_ca))
    _publish(relay, source, tmp_path)
    shown = relay.cli("directory", "show", "--hub", "H14-D31", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["changes"]["agencies_added"] == [NEW]
    status = relay.cli("status", "--json")  # the operator's commands read the directory in force
    assert status.returncode == 0 and f"inbox.{NEW}" in status.stdout, status.stderr
    doc = relay.document(SENDER, [NEW], subject="chào xã mới")
    sent = relay.client(SENDER).send(doc)
    assert [i.body for i in relay.take(NEW, 1)] == [doc]
    assert set(relay.client(SENDER).follow(sent)) == {"accepted", "delivered"}
    back = relay.document(NEW, [SENDER], subject="xã mới trả lời")
    answered = relay.client(NEW).send(back)
    assert [i.body for i in relay.take(SENDER, 1, accept=lambda i: i.body == back)] == [back]
    assert set(relay.client(NEW).follow(answered)) == {"accepted", "delivered"}


def test_a_removed_commune_loses_its_account_and_what_waits_for_it_stays(relay: Relay, tmp_path: Path) -> None:
    """A document waits in a commune's inbox when version 3 removes the commune: its account can
    no longer log in, the waiting document stays in its queue on the hub, and a new document
    addressed to it is refused RECIPIENT_UNKNOWN, its sender told."""
    waiting = relay.document(SENDER, [NEIGHBOUR], subject="đang chờ")
    relay.client(SENDER).send(waiting)
    deadline = time.monotonic() + 30
    while relay.depth("H41", wire.inbox_queue(NEIGHBOUR)) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    url = relay.agency_url(NEIGHBOUR)  # what its document system connects with
    assert blocking.queue_depth(url, wire.inbox_queue(NEIGHBOUR)) == 1
    source = _source(relay)
    source["agencies"] = [a for a in source["agencies"] if a["organ_id"] != NEIGHBOUR]
    _publish(relay, source, tmp_path)
    with pytest.raises(LienthongError) as info:
        blocking.queue_depth(url, wire.inbox_queue(NEIGHBOUR))
    assert info.value.code == "ACCESS_REFUSED"
    assert relay.depth("H41", wire.inbox_queue(NEIGHBOUR)) == 1
    late = _addressed_to(relay, NEIGHBOUR, "đến cơ quan đã giải thể")
    told = relay.client(SENDER).follow(relay.client(SENDER).send(late))
    assert [(r.kind, r.code) for r in told.values()] == [("rejected", "RECIPIENT_UNKNOWN")]


def test_a_merged_communes_code_reaches_the_commune_that_replaced_it(relay: Relay, tmp_path: Path) -> None:
    """Version 4 merges commune 002.00.31.H14 into 001.00.31.H14, which now carries the old code: a
    document addressed to the old code is delivered to the new commune, and the record of the hub
    that delivered it names both codes."""
    source = _source(relay)
    source["agencies"] = [a for a in source["agencies"] if a["organ_id"] != MERGED]
    next(a for a in source["agencies"] if a["organ_id"] == FAR)["old_codes"] = [MERGED]
    _publish(relay, source, tmp_path)
    doc = _addressed_to(relay, MERGED, "gửi mã cũ")
    relay.client(SENDER).send(doc)
    [item] = relay.take(FAR, 1, accept=lambda i: i.body == doc)
    last = parse_record(item.trace[-1])
    assert last.hub == "H14-D31" and last.extra["replaced"] == f"{MERGED}>{FAR}" and last.recipients == (MERGED,)


def test_a_moved_agency_is_delivered_at_its_new_hub(relay: Relay, tmp_path: Path) -> None:
    """Version 5 moves the district committee from H14-D31 (a district hub being dissolved) to its
    province's hub H14: a document for it is delivered into its inbox at H14, where its account
    now reads."""
    source = _source(relay)
    next(a for a in source["agencies"] if a["organ_id"] == DISTRICT)["hub"] = "H14"
    _publish(relay, source, tmp_path)
    doc = relay.document(SENDER, [DISTRICT], subject="huyện về tỉnh")
    relay.client(SENDER).send(doc)
    [item] = relay.take(DISTRICT, 1, accept=lambda i: i.body == doc)
    assert parse_record(item.trace[-1]).hub == "H14"


def _addressed_to(relay: Relay, code: str, subject: str) -> bytes:
    """A document from the sender to ``code``, an agency the directory no longer lists by that code."""
    from broker.core.edxml import Organ, build_document
    from broker.core.signer import sign

    doc = build_document(Organ(SENDER, "UBND xã Hưng Nguyên"), [Organ(code, "UBND xã Hồng Việt")], subject=subject)
    return sign(doc, relay.key(SENDER))

