"""Evidence that binds: the attacks of the second evidence review, each of which must now fail.

`audit verify-bundle` ties every hop record to the bytes of a bundled message, to that message's
document, to a `prev` chain from the sender's hub along the hub tree, and reads the document id,
sender and recipients from the signed message, never from the manifest.  `audit verify-log`
requires every entry older than a set age to come under a checkpoint a neighbour witnessed, and
says "not checked" (no pass) where it could not check."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.core.auditlog import AuditEntry
from broker.core.edxml import Organ, build_document
from broker.core.errors import AuditFailure
from broker.core.hoprecords import HopRecord, parse_record, sign_record
from broker.core.signer import SigningKey, sign
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.ops.bundle import verify_bundle
from broker.relay.assemble import principal_key
from broker.relay.checkpoints import checkpoint
from broker.relay.store import open_store
from broker.settings import PkiLayout
from tests.bundles import trace, write_bundle
from tests.relay import ROOT, Relay

SENDER, FAR, OTHER = "000.00.51.H41", "001.00.31.H14", "002.00.31.H14"  # FAR and OTHER: communes of H14-D31
DIRECTORY = ROOT / "config" / "topology.yaml"


@pytest.fixture(scope="module")
def d1(dev_pki: Path) -> bytes:
    """D1: a document from a commune of Nghệ An to the commune FAR of Cao Bằng, signed."""
    doc = build_document(Organ(SENDER, "xã"), [Organ(FAR, "xã")], subject="D1", document_id="D1")
    return sign(doc, SigningKey.load(*PkiLayout(dev_pki).agency(SENDER)))


@pytest.fixture(scope="module")
def d2(dev_pki: Path) -> bytes:
    """D2: another document of the same sender, to the commune OTHER."""
    doc = build_document(Organ(SENDER, "xã"), [Organ(OTHER, "xã")], subject="D2", document_id="D2")
    return sign(doc, SigningKey.load(*PkiLayout(dev_pki).agency(SENDER)))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bundle(folder: Path, dev_pki: Path, message: bytes, hops: list[str], claimed: str) -> Path:
    """A bundle of ``message`` and the hop records ``hops``, every record genuinely signed by the
    dev PKI's hubs, the manifest naming ``claimed``."""
    keys = PkiLayout(dev_pki)
    files = {f"messages/{_digest(message)}.edxml": message}
    files.update({f"hops/{i:02d}.json": t.encode() for i, t in enumerate(hops)})
    files.update({f"hubs/{h}.pem": keys.hub(h)[1].read_bytes() for h in ("H41", "national", "H14", "H14-D31")})
    write_bundle(folder, files, claimed)
    return folder


def _refused(folder: Path, dev_pki: Path, topology: Topology) -> str:
    with pytest.raises(AuditFailure) as info:
        verify_bundle(folder, trust=TrustStore.load(dev_pki), directory=topology)
    return info.value.message


def _resign(token: str, dev_pki: Path, **changes: object) -> str:
    """A hop record changed and signed again by its own hub (a dishonest hub operator can)."""
    rec = parse_record(token)
    fields = {**rec.__dict__, **changes}
    return sign_record(HopRecord(**fields), SigningKey.load(*PkiLayout(dev_pki).hub(rec.hub)))


def test_a_genuine_bundle_is_verified_with_what_the_message_says(dev_pki: Path, d1: bytes, tmp_path: Path) -> None:
    """The baseline: D1 and its four hop records; `verify-bundle` (another process, only the bundle,
    the auditor's trust store and directory) names D1, its sender and recipient as signed, and
    delivery to FAR."""
    folder = _bundle(tmp_path / "b", dev_pki, d1, trace(PkiLayout(dev_pki), _digest(d1), "D1", FAR), "D1")
    done = subprocess.run([sys.executable, "-m", "broker.cli", "audit", "verify-bundle", str(folder), "--trust",
                           str(dev_pki), "--directory", str(DIRECTORY)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"VERIFIED: document D1 from {SENDER} to {FAR} (as signed)" in done.stdout
    assert done.stdout.rstrip().endswith(f"delivered to {FAR}")


def test_the_reviewed_bundle_no_longer_verifies(dev_pki: Path, topology: Topology, d1: bytes, d2: bytes,
                                               tmp_path: Path) -> None:
    """The review's bundle: its only message is D1 to FAR, its manifest names D-CLAIMED-LABEL, and
    its hop records are D2's, genuinely signed, ending in OTHER's inbox.  It printed "VERIFIED:
    document D-CLAIMED-LABEL ... delivered to OTHER"; now it is refused, naming the first lie it
    meets (each is refused alone in the next test)."""
    folder = _bundle(tmp_path / "b", dev_pki, d1, trace(PkiLayout(dev_pki), _digest(d2), "D2", OTHER),
                     "D-CLAIMED-LABEL")
    done = subprocess.run([sys.executable, "-m", "broker.cli", "audit", "verify-bundle", str(folder), "--trust",
                           str(dev_pki), "--directory", str(DIRECTORY)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "VERIFIED" not in done.stdout
    assert done.stderr.startswith("ERROR AUDIT_BROKEN: the manifest says document 'D-CLAIMED-LABEL'; "
                                  "the signed message says 'D1'"), done.stderr


def test_each_lie_of_a_bundle_is_named(dev_pki: Path, topology: Topology, d1: bytes, d2: bytes,
                                       tmp_path: Path) -> None:
    """One lie at a time, every record genuinely signed by a hub: the manifest naming another
    document; D2's records added beside D1's; the last hub claiming delivery to OTHER, who is not
    a recipient of D1; the national hub's record left out; a lone delivery record with no trace
    from the sender's hub; a trace that skips the national hub; a record naming another document."""
    keys = PkiLayout(dev_pki)
    genuine = trace(keys, _digest(d1), "D1", FAR)
    cases = {
        "manifest": (genuine, "D-CLAIMED-LABEL", "the manifest says document 'D-CLAIMED-LABEL'"),
        "other bytes": (genuine + trace(keys, _digest(d2), "D2", OTHER), "D1", "bytes that are not in the bundle"),
        "not a recipient": (genuine[:3] + [_resign(genuine[3], dev_pki, targets=(f"inbox:{OTHER}",),
                                                   recipients=(OTHER,))], "D1", "not a recipient"),
        "gap": ([genuine[0], *genuine[2:]], "D1", "follows a record that is not in the bundle"),
        "lone": ([_resign(genuine[3], dev_pki, prev="")], "D1", "not a path from the sender"),
        "skip": (trace(keys, _digest(d1), "D1", FAR, path=("H41", "H14", "H14-D31")), "D1", "not a path"),
        "document": (genuine[:3] + [_resign(genuine[3], dev_pki, document_id="D9")], "D1", "names document 'D9'"),
    }
    for name, (hops, claimed, why) in cases.items():
        folder = _bundle(tmp_path / name.replace(" ", "-"), dev_pki, d1, hops, claimed)
        assert why in _refused(folder, dev_pki, topology), name


# --- the log: witnesses required ------------------------------------------------------------------


RELAY = {"env": {"LIENTHONG_CHECKPOINT_SECONDS": "0.5"}}
"""The relay's hubs sign and hand their checkpoints to their neighbours every half second."""


def _state(relay: Relay, hub: str) -> Path:
    return Path(relay.settings.state_url) / f"{hub}.sqlite3"


def _witnessed_head(relay: Relay, hub: str, by: str, timeout: float = 30) -> int:
    """Wait until ``by`` witnessed a checkpoint of ``hub`` at the head of its log; return that entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = open_store(relay.settings.state_url, hub=hub).audit_head(hub)
        with sqlite3.connect(_state(relay, by)) as conn:
            rows = conn.execute("SELECT body FROM audit WHERE kind = 'witness'").fetchall()
        seen = {int(parse_record(json.loads(b)["checkpoint"]).extra["seq"]) for (b,) in rows
                if f'"of":"{hub}"' in json.loads(b)["witness"]}
        if head is not None and head.seq in seen:
            return head.seq
        time.sleep(0.3)
    raise AssertionError(f"{by} never witnessed the head of {hub}'s log")


def _deliver(relay: Relay) -> None:
    doc = relay.document(SENDER, [FAR])
    relay.client(SENDER).send(doc)
    assert [i.body for i in relay.take(FAR, 1, timeout=60, accept=lambda i: i.body == doc)] == [doc]


@pytest.mark.broker
def test_a_hub_whose_checkpoints_stopped_is_noticed(relay: Relay) -> None:
    """H14's worker is started again with checkpoints once an hour: documents keep crossing it,
    and none of its new entries is witnessed.  Within the window verify-log reports the growing
    tail; past it, it says the hub's checkpoints stopped reaching its neighbours."""
    relay.stop_workers("H14")
    relay.start_worker("H14", LIENTHONG_CHECKPOINT_SECONDS="3600")
    _deliver(relay)
    tail = relay.cli("audit", "verify-log", "--hub", "H14", "--witness-within", "3")
    assert tail.returncode == 0 and "unwitnessed tail" in tail.stdout, tail.stdout + tail.stderr
    time.sleep(3.5)
    stopped = relay.cli("audit", "verify-log", "--hub", "H14", "--witness-within", "3")
    assert stopped.returncode == 2 and "checkpoints stopped reaching its neighbours" in stopped.stdout, stopped.stdout


@pytest.mark.broker
def test_a_tail_rewritten_after_the_last_witness_is_found(relay: Relay) -> None:
    """H41's operator (who holds its key) adds entries after the last checkpoint the national hub
    witnessed, and signs a checkpoint over them.  The chain and H41's own checkpoints are intact,
    so verify-log used to pass it; now the tail is reported at once (length, age), and once it is
    older than --witness-within with no witness it is BROKEN."""
    _deliver(relay)
    _witnessed_head(relay, "H41", "national")
    relay.stop_workers("H41")
    ok = relay.cli("audit", "verify-log", "--hub", "H41", "--witness-within", "3")
    assert ok.returncode == 0 and "intact" in ok.stdout and "unwitnessed tail" not in ok.stdout, ok.stdout + ok.stderr
    store = open_store(relay.settings.state_url, hub="H41")
    for i in range(3):
        store.append("H41", f"{i:064x}", AuditEntry("hop", "rewritten", "what the operator wants said"))
    checkpoint(store, "H41", principal_key(relay.settings.keys.hub("H41")))
    fresh = relay.cli("audit", "verify-log", "--hub", "H41", "--witness-within", "3")
    assert fresh.returncode == 0 and "unwitnessed tail 3 entries" in fresh.stdout, fresh.stdout + fresh.stderr
    time.sleep(3.5)
    late = relay.cli("audit", "verify-log", "--hub", "H41", "--witness-within", "3")
    assert late.returncode == 2 and "BROKEN at entry" in late.stdout, late.stdout
    assert "its last 3 entries" in late.stdout and "under no checkpoint a neighbour witnessed" in late.stdout


@pytest.mark.broker
def test_without_the_neighbours_logs_nothing_passes(relay: Relay, tmp_path: Path) -> None:
    """H41's log alone, copied where its neighbour's log is not: verify-log says the witnesses were
    not checked and exits 2 (AUDIT_INCOMPLETE) instead of "0 witnessed, intact"; a hub whose log
    is not there at all is not checked either (no empty log is made for it)."""
    alone = tmp_path / "state"
    alone.mkdir()
    with sqlite3.connect(_state(relay, "H41")) as src, sqlite3.connect(alone / "H41.sqlite3") as dst:
        src.backup(dst)
    out = relay.cli("audit", "verify-log", "--hub", "H41", "--hub", "national",
                    env={"LIENTHONG_STATE_URL": str(alone)})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not checked: witnesses not checked: the logs of its neighbours (national) are not here" in out.stdout
    assert "national  NOT CHECKED: its log is not on this machine" in out.stdout
    assert out.stderr.startswith("ERROR AUDIT_INCOMPLETE:") and "intact" not in out.stdout
    assert not (alone / "national.sqlite3").exists()
