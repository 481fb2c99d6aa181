"""The signed directory: what every hub agrees on, one version signed by a directory authority,
spread hub to hub, applied while the hubs serve.  Each way a directory can be wrong is refused with
its code and goes no further; a hub that was away is brought up to date; a former agency code
reaches the agency that carries it now."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from broker.core import directory, wire
from broker.core.delivery import DeliveryCheck
from broker.core.errors import ConfigError, DirectoryRefused
from broker.core.hoprecords import parse_record
from broker.core.signer import SigningKey
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.relay import devpki
from broker.relay.assemble import hub_certificates
from broker.relay.livetrust import LiveTrust
from broker.settings import PkiLayout, Tuning
from tests import hops
from tests.network import Network

ROOT = Path(__file__).resolve().parents[1]
SENDER, FAR, MERGED = "000.00.51.H41", "001.00.31.H14", "002.00.31.H14"


def _source() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))


def _signed(pki: Path, source: dict[str, Any], version: int, key: SigningKey | None = None) -> bytes:
    topology = Topology.from_dict(copy.deepcopy(source))
    certs = hub_certificates(pki, topology, TrustStore.load(pki))
    payload = directory.payload_of(source, version=version, issued=datetime.now(UTC), hub_certificates=certs)
    return directory.sign(payload, key or SigningKey.load(*PkiLayout(pki).directory_authority()))


def _read(pki: Path, signed: bytes) -> directory.Directory:
    return directory.read(signed, trust=TrustStore.load(pki), authorities=PkiLayout(pki).authorities())


def test_a_signed_directory_reads_back_what_was_signed(dev_pki: Path) -> None:
    """Version, hubs, agencies, settings and each hub's certificate come back as signed, with the
    bytes kept as they were for passing on."""
    signed = _signed(dev_pki, _source(), 7)
    d = _read(dev_pki, signed)
    assert d.version == 7 and d.signed == signed and d.digest == wire.message_id(signed)
    assert set(d.topology.hubs) == {"national", "H41", "H14", "H14-D31"} and len(d.topology.agencies) == 12
    assert d.topology.settings.report.targets["commune"] == 0.6
    assert {h: c.subject for h, c in d.hub_certificates.items()} == {
        h: c.subject for h, c in hub_certificates(dev_pki, d.topology, TrustStore.load(dev_pki)).items()}


def test_a_source_giving_one_broker_for_all_its_hubs_signs_it_into_each(dev_pki: Path) -> None:
    """A source may name its broker once (top-level ``amqp_url``, ``management_url``); the directory
    carries hubs only, so each hub's entry gets that broker's URLs written in, and a hub that applies
    it connects to that broker, not the default one.  A hub's own URL stays its own."""
    source = _source()
    source.update(amqp_url="amqps://broker.example.vn:5671/", management_url="http://127.0.0.1:15672")
    source["hubs"][1]["amqp_url"] = "amqps://h41.example.vn:5671/"
    d = _read(dev_pki, _signed(dev_pki, source, 1))
    own = source["hubs"][1]["id"]
    assert {h: hub.amqp_url for h, hub in d.topology.hubs.items()} == {
        h: "amqps://h41.example.vn:5671/" if h == own else "amqps://broker.example.vn:5671/" for h in d.topology.hubs}
    assert {hub.management_url for hub in d.topology.hubs.values()} == {"http://127.0.0.1:15672"}


def _tampered(signed: bytes) -> bytes:
    outer = json.loads(signed)
    body = json.loads(base64.b64decode(outer["payload"]))
    body["agencies"][0]["name"] = "Bộ Khác"
    outer["payload"] = base64.b64encode(directory.canonical(body)).decode()
    return json.dumps(outer).encode()


@pytest.mark.parametrize(("case", "code"), [
    ("tampered", "DIRECTORY_SIGNATURE"),
    ("garbage", "DIRECTORY_SIGNATURE"),
    ("unsigned", "DIRECTORY_SIGNATURE"),
    ("signed by a hub", "DIRECTORY_SIGNER"),
    ("signed under another root", "DIRECTORY_SIGNER"),
    ("a cycle", "DIRECTORY_INVALID"),
    ("two roots", "DIRECTORY_INVALID"),
    ("an agency on an unknown hub", "DIRECTORY_INVALID"),
    ("50 MB", "DIRECTORY_TOO_LARGE"),
])
def test_a_wrong_directory_is_refused_with_its_code(case: str, code: str, dev_pki: Path) -> None:
    """A changed byte, no signature, a signer the hub does not name as its authority (even one
    chaining to its root), a tree that is no tree, an agency on no hub, 50 MB: each refused, with
    its code, before anything in it is used."""
    source = _source()
    if case == "a cycle":
        source["hubs"][0]["parent"] = "H14-D31"
        source["hubs"].append({"id": "H99", "name": "gốc", "tier": "national"})
    if case == "two roots":
        source["hubs"][1].pop("parent")
    if case == "an agency on an unknown hub":
        source["agencies"][0]["hub"] = "H99"
    key = None
    if case == "signed by a hub":
        key = SigningKey.load(*PkiLayout(dev_pki).hub("national"))
    if case == "signed under another root":
        foreign = devpki.make_root("another root")
        issued = devpki.issue(foreign, "an authority elsewhere", uid="directory:elsewhere", kind="ec")
        key = SigningKey(issued.key, issued.cert)
    if case in ("a cycle", "two roots", "an agency on an unknown hub"):
        # what payload_of would refuse to build, written as an authority could sign it anyway
        certs = hub_certificates(dev_pki, Topology.from_dict(_source()), TrustStore.load(dev_pki))
        body = {"version": 2, "issued": "2026-12-07T00:00:00Z", "namespace": "lienthong", "hubs": source["hubs"],
                "agencies": source["agencies"], "settings": source["settings"],
                "hub_certificates": {h: base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                                     for h, c in certs.items()}}
        signed = directory.sign(directory.canonical(body), SigningKey.load(*PkiLayout(dev_pki).directory_authority()))
    else:
        signed = _signed(dev_pki, source, 2, key)
    data = {"tampered": _tampered(signed), "garbage": b"hubs: [", "50 MB": b"x" * (50 * 1024 * 1024),
            "unsigned": json.dumps({"format": directory.FORMAT, "payload": "", "signature": "",
                                    "certificates": []}).encode()}.get(case, signed)
    with pytest.raises(DirectoryRefused) as info:
        _read(dev_pki, data)
    assert info.value.code == code, info.value.message


def test_changes_name_what_a_version_adds_removes_and_moves(dev_pki: Path) -> None:
    """What ``directory show`` prints: an agency added, one removed, one moved to another hub."""
    before = Topology.from_dict(_source())
    source = _source()
    source["agencies"] = [a for a in source["agencies"] if a["organ_id"] != "000.00.52.H41"]
    source["agencies"].append({"organ_id": "003.00.31.H14", "name": "UBND xã Mới", "hub": "H14-D31"})
    next(a for a in source["agencies"] if a["organ_id"] == "000.00.31.H14")["hub"] = "H14"
    diff = directory.changes(before, Topology.from_dict(source))
    assert diff.agencies_added == ("003.00.31.H14",) and diff.agencies_removed == ("000.00.52.H41",)
    assert diff.agencies_moved == (("000.00.31.H14", "H14-D31", "H14"),)
    assert not diff.hubs_added and not diff.hubs_removed


def _merged() -> dict[str, Any]:
    """Commune 002.00.31.H14 merged into 001.00.31.H14, which now carries its code."""
    source = _source()
    source["agencies"] = [a for a in source["agencies"] if a["organ_id"] != MERGED]
    next(a for a in source["agencies"] if a["organ_id"] == FAR)["old_codes"] = [MERGED]
    return source


def test_a_former_code_reaches_the_agency_that_carries_it(dev_pki: Path) -> None:
    """A document addressed to a merged commune's former code is delivered into the inbox of the
    commune that replaced it; the delivering hop's record names both codes, and the recipient's
    own check takes it."""
    topology = Topology.from_dict(_merged())
    hubs = hops.hops(dev_pki, topology)
    body = hops.document(dev_pki, Topology.from_dict(_source()), SENDER, [MERGED])
    last = hops.carry(hubs, body)[-1]
    [inbox] = [c for c in last.copies if wire.kind_of(c.headers) == wire.Kind.EDXML]
    assert str(inbox.target) == f"inbox:{FAR}"
    record = parse_record(inbox.headers[wire.H_TRACE][-1])
    assert record.extra["replaced"] == f"{MERGED}>{FAR}" and record.recipients == (MERGED,)
    check = DeliveryCheck(TrustStore.load(dev_pki), topology, hubs["H41"].hub_certs)
    check(FAR, wire.Kind.EDXML, body, inbox.headers[wire.H_TRACE])


def test_a_former_code_cannot_be_another_agencys_code() -> None:
    """An old code that another agency still carries, or that two agencies claim, is refused at load."""
    source = _source()
    next(a for a in source["agencies"] if a["organ_id"] == FAR)["old_codes"] = [MERGED]  # MERGED still exists
    with pytest.raises(ConfigError, match="is another agency's code"):
        Topology.from_dict(source)


@pytest.fixture()
def network(dev_pki: Path, topology: Topology, tmp_path: Path) -> Iterator[Network]:
    made: dict[str, list[tuple[Topology, Topology]]] = {h: [] for h in topology.hubs}
    net = Network(dev_pki, topology, tmp_path,
                  provision=lambda hub: lambda old, new: made[hub].append((old, new)))  # type: ignore[misc,func-returns-value]
    net.made = made  # type: ignore[attr-defined]
    yield net
    net.close()


def _hand_in(net: Network, hub: str, signed: bytes) -> None:
    """The hub's operator hands it a directory (``lienthong directory publish``: its own ingress)."""
    net.brokers[hub].put("ingress", signed, exchange=wire.EX_INGRESS, headers={wire.H_KIND: wire.Kind.DIRECTORY})


def test_a_version_spreads_along_the_tree_and_is_applied_at_each_hub(network: Network, dev_pki: Path) -> None:
    """Handed to the national hub, version 2 reaches every hub once; each makes its broker objects
    for it, keeps it, and judges with it: a commune it adds receives a document."""
    for hub in network.topology.hubs:
        network.start(hub)
    network.run()
    source = _source()
    source["agencies"].append({"organ_id": "003.00.31.H14", "name": "UBND xã Mới", "hub": "H14-D31"})
    _hand_in(network, "national", _signed(dev_pki, source, 2))
    network.run()
    assert {h: w.directories.version for h, w in network.workers.items()} == dict.fromkeys(network.topology.hubs, 2)  # type: ignore[union-attr]
    assert {h: len(calls) for h, calls in network.made.items()} == dict.fromkeys(network.topology.hubs, 1)  # type: ignore[attr-defined]
    assert all(network.stores[h].directory_versions(h)[-1][0] == 2 for h in network.topology.hubs)
    assert all(network.queue(h, ".:parking:") == [] for h in network.topology.hubs)
    body = hops.document(dev_pki, Topology.from_dict(source), SENDER, ["003.00.31.H14"])
    network.brokers["H41"].put("ingress", body, exchange=wire.agency_exchange(SENDER))
    network.run()
    assert [m.body for m in network.queue("H14-D31", ".:inbox:003.00.31.H14")] == [body]


@pytest.mark.parametrize(("what", "code"), [("older", "DIRECTORY_STALE"), ("tampered", "DIRECTORY_SIGNATURE"),
                                            ("without this hub", "DIRECTORY_INVALID")])
def test_a_refused_version_is_parked_and_goes_no_further(what: str, code: str, network: Network, dev_pki: Path) -> None:
    """A version not newer than the one in force, one whose bytes changed, one that leaves the hub
    out: parked with its code at the hub that refused it, passed to no neighbour, and every hub
    keeps version 3."""
    for hub in network.topology.hubs:
        network.start(hub)
    network.run()
    _hand_in(network, "national", _signed(dev_pki, _source(), 3))
    network.run()
    source = _source()
    if what == "without this hub":
        source["hubs"] = [h for h in source["hubs"] if h["id"] != "H14-D31"]
        source["agencies"] = [a for a in source["agencies"] if a["hub"] != "H14-D31"]
    signed = _signed(dev_pki, source, 2 if what == "older" else 4)
    _hand_in(network, "H14-D31", _tampered(signed) if what == "tampered" else signed)
    network.run()
    [parked] = network.queue("H14-D31", ".:parking:")
    assert parked.headers[wire.H_CODE] == code
    assert {h: w.directories.version for h, w in network.workers.items()} == dict.fromkeys(network.topology.hubs, 3)  # type: ignore[union-attr]
    assert all(network.queue(h, ".:parking:") == [] for h in ("national", "H41", "H14"))


def test_a_hub_that_was_away_gets_the_version_in_force_from_its_neighbour(network: Network, dev_pki: Path) -> None:
    """H14-D31 is down while version 2 spreads, and what was sent to it is gone (restored from a
    backup, say).  It comes back on its topology file and has nothing to announce; at H14's next
    checkpoint H14 says it runs version 2, H14-D31 answers that it runs none, and H14 sends
    version 2, which H14-D31 applies."""
    for hub in network.topology.hubs:
        network.start(hub)
    network.run()
    network.stop("H14-D31")
    _hand_in(network, "national", _signed(dev_pki, _source(), 2))
    network.run()
    network.brokers["H14-D31"].queues["ingress"].clear()
    assert network.stores["H14-D31"].directory_versions("H14-D31") == []
    network.start("H14-D31")
    network.run()
    assert network.workers["H14-D31"].directories.version == 0  # type: ignore[union-attr]
    network.advance("H14", Tuning().checkpoint_seconds)
    assert network.workers["H14-D31"].directories.version == 2  # type: ignore[union-attr]


def test_a_hub_certificate_from_the_directory_is_judged_at_each_record(dev_pki: Path, topology: Topology,
                                                                        tmp_path: Path) -> None:
    """The hubs run on a directory handed to them (its hub certificates, not the PKI's files) and
    follow their trust directory.  H41's certificate is revoked while they serve: from the next
    snapshot on, what H41 forwards (the document, the receipts it signs) is parked HUB_REVOKED at
    the national hub, while what Cao Bằng sends to Nghệ An's commune still arrives."""
    pki = tmp_path / "pki"
    shutil.copytree(dev_pki, pki)
    live = LiveTrust(pki)
    net = Network(pki, topology, tmp_path, trust=live)
    try:
        for hub in topology.hubs:
            net.start(hub)
        _hand_in(net, "national", _signed(pki, _source(), 2))
        net.run()
        assert {h: w.directories.version for h, w in net.workers.items()} == dict.fromkeys(topology.hubs, 2)  # type: ignore[union-attr]

        def send(sender: str, recipient: str) -> bytes:
            body = hops.document(pki, topology, sender, [recipient])
            net.brokers[topology.agency(sender).hub].put("ingress", body, exchange=wire.agency_exchange(sender))
            net.run()
            return body

        before = send(SENDER, FAR)
        assert [m.body for m in net.queue("H14-D31", f".:inbox:{FAR}")] == [before]
        devpki.revoke(pki, [PkiLayout(pki).hub("H41")[1]])
        assert live.refresh(every=0)
        refused, still = send(SENDER, FAR), send(FAR, SENDER)
        parked = net.queue("national", ".:parking:")  # the document, and the receipts H41 signed
        assert refused in [m.body for m in parked] and {m.headers[wire.H_CODE] for m in parked} == {"HUB_REVOKED"}
        delivered = [m.body for m in net.queue("H14-D31", f".:inbox:{FAR}")]
        assert delivered.count(before) == 1 and refused not in delivered
        assert still in [m.body for m in net.queue("H41", f".:inbox:{SENDER}")]
    finally:
        net.close()


def test_a_directory_carries_only_what_hubs_share(dev_pki: Path, tmp_path: Path) -> None:
    """The size limits and reporting targets travel in the directory; a hub's alert thresholds and
    retry tiers are its own: a directory signed from a source that sets them changes neither."""
    from broker.core.deployment import DeploymentSettings, read
    from broker.relay.directories import Directories
    from broker.relay.store import sqlite_store

    source = _source()
    source["settings"].update(max_bytes=123_456, retry_tiers_ms=[5], alerts={"backlog": 7})
    signed = _signed(dev_pki, source, 2)
    assert set(json.loads(base64.b64decode(json.loads(signed)["payload"]))["settings"]) == {"max_bytes", "max_depth",
                                                                                          "report"}
    local = read({"alerts": {"backlog": 40}, "retry_tiers_ms": [100, 200]})
    store = sqlite_store(tmp_path / "h.sqlite3")
    try:
        d = Directories("H41", store, TrustStore.load(dev_pki), PkiLayout(dev_pki).authorities, None,
                        local=local).read(signed)
    finally:
        store.close()
    assert d.topology.settings.max_bytes == 123_456 and d.topology.settings.report.targets["commune"] == 0.6
    assert d.topology.settings.alerts.backlog == 40 and d.topology.settings.retry_tiers_ms == (100, 200)
    assert DeploymentSettings().alerts.backlog == 1000
