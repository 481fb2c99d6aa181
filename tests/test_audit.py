"""Receipts, business statuses and auditor evidence, end to end on a real RabbitMQ."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from broker.core import receipts
from broker.core.edxml import Business, Organ, build_document
from broker.core.parsing import parse
from broker.core.signer import sign
from broker.core.trust import TrustStore
from tests.relay import Relay

pytestmark = pytest.mark.broker

SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"


@pytest.fixture(scope="module")
def delivered(relay: Relay) -> dict[str, bytes]:
    """A document sent across provinces, delivered, and its receipts back at the sender."""
    doc = relay.document(SENDER, [RECIPIENT], subject="Công văn kiểm toán")
    relay.client(SENDER).send(doc)
    assert [i.body for i in relay.take(RECIPIENT, 1, accept=lambda i: i.body == doc)] == [doc]
    digest = hashlib.sha256(doc).hexdigest()
    trust = TrustStore.load(relay.settings.pki)
    got = {}
    for item in relay.take(SENDER, 2, accept=lambda i: i.kind == "receipt"
                           and receipts.verify(i.body, trust).receipt.document_sha256 == digest):
        got[receipts.read(parse(item.body)).kind] = item.body
    assert set(got) == {"accepted", "delivered"}
    return {"document": doc, **got}




def _document_id(doc: bytes) -> str:
    from broker.core.edxml import read
    return read(parse(doc)).document_id


def test_full_life_cycle_of_statuses(relay: Relay, delivered: dict[str, bytes]) -> None:
    """The recipient answers 01, 03, 04, 05, 06; each status is signed by it, validated at every hub
    like a document, and reaches the sender's inbox."""
    doc = delivered["document"]
    client = relay.client(RECIPIENT)
    for code in ("01", "03", "04", "05", "06"):
        client.send(client.status_for(doc, code, key=relay.key(RECIPIENT)))
    statuses = relay.take(SENDER, 5, accept=lambda i: i.kind == "edxml" and b"StatusCode" in i.body)
    from broker.core.edxml import read
    from broker.core.validation import check
    codes = []
    for item in statuses:
        checked = check(item.body, trust=TrustStore.load(relay.settings.pki), topology=relay.topology)
        assert checked.message.sender.organ_id == RECIPIENT
        assert checked.message.document_id == _document_id(doc)
        codes.append(read(parse(item.body)).status_code)
    assert sorted(codes) == ["01", "03", "04", "05", "06"]


def test_business_rejection_status(relay: Relay, delivered: dict[str, bytes]) -> None:
    """A recipient refusing a document (status 02) is relayed back like any status."""
    client = relay.client(RECIPIENT)
    status = client.status_for(delivered["document"], "02", key=relay.key(RECIPIENT), description="sai thể thức")
    client.send(status)
    assert [i.body for i in relay.take(SENDER, 1, accept=lambda i: i.body == status)] == [status]


def test_revocation_flow(relay: Relay, delivered: dict[str, bytes]) -> None:
    """The sender revokes its document (BussinessDocType 1); the recipient gets the revocation and
    answers 15 (change accepted), which reaches the sender."""
    original_id = _document_id(delivered["document"])
    topo = relay.topology
    revocation = sign(build_document(Organ(SENDER, topo.agency(SENDER).name), [Organ(RECIPIENT)],
                                     subject="Thu hồi văn bản", business=Business("1", original_id, "thu hồi")),
                      relay.key(SENDER))
    relay.client(SENDER).send(revocation)
    got = relay.take(RECIPIENT, 1, accept=lambda i: i.body == revocation)
    assert len(got) == 1
    from broker.core.edxml import read
    assert read(parse(got[0].body)).business == Business("1", original_id, "thu hồi")
    client = relay.client(RECIPIENT)
    answer = client.status_for(revocation, "15", key=relay.key(RECIPIENT))
    client.send(answer)
    assert len(relay.take(SENDER, 1, accept=lambda i: i.body == answer)) == 1


def test_receipts_verify_with_xmlsec1(relay: Relay, delivered: dict[str, bytes], tmp_path: Path) -> None:
    """Hub receipts are plain XMLDSig: Debian's xmlsec1 verifies them against the root, and catches a
    changed byte."""
    if shutil.which("xmlsec1") is None:
        pytest.fail("xmlsec1 is not installed (scripts/bootstrap.sh installs it)")
    for kind in ("accepted", "delivered"):
        path = tmp_path / f"{kind}.xml"
        path.write_bytes(delivered[kind])
        ok = subprocess.run(["xmlsec1", "--verify", "--trusted-pem", str(relay.settings.pki / "root-ca.pem"),
                             str(path)], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        path.write_bytes(delivered[kind].replace(b"<lt:Kind>", b"<lt:Kind>x", 1))
        bad = subprocess.run(["xmlsec1", "--verify", "--trusted-pem", str(relay.settings.pki / "root-ca.pem"),
                              str(path)], capture_output=True, text=True)
        assert bad.returncode != 0


def test_receipt_binds_exact_bytes(relay: Relay, delivered: dict[str, bytes], tmp_path: Path) -> None:
    """verify-receipt accepts the receipt with its document, refuses it with another document."""
    (tmp_path / "r.xml").write_bytes(delivered["delivered"])
    (tmp_path / "a.edxml").write_bytes(delivered["document"])
    (tmp_path / "b.edxml").write_bytes(relay.document(SENDER, [RECIPIENT], subject="khác"))
    good = relay.cli("audit", "verify-receipt", str(tmp_path / "r.xml"), "--document", str(tmp_path / "a.edxml"))
    assert good.returncode == 0, good.stderr
    assert "VERIFIED: receipt 'delivered' by hub H14-D31" in good.stdout
    bad = relay.cli("audit", "verify-receipt", str(tmp_path / "r.xml"), "--document", str(tmp_path / "b.edxml"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("ERROR AUDIT_BROKEN:") and "Traceback" not in bad.stderr


def test_trail_shows_every_hop(relay: Relay, delivered: dict[str, bytes]) -> None:
    """audit trail lists the four hops of the document and the receipts, each signature checked."""
    out = relay.cli("audit", "trail", _document_id(delivered["document"]), "--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    digest = hashlib.sha256(delivered["document"]).hexdigest()
    hops = [e["hub"] for e in entries if e["kind"] == "hop" and e["digest"] == digest]
    assert hops == ["H41", "national", "H14", "H14-D31"]
    assert {e["verdict"] for e in entries if e["kind"] == "receipt" and e["digest"] == digest} == {
        "accepted", "delivered"}
    assert all(e["signature"] == "ok" for e in entries)


def test_bundle_verifies_offline_and_tampering_is_named(relay: Relay, delivered: dict[str, bytes],
                                                       tmp_path: Path) -> None:
    """export writes a bundle that verify-bundle accepts with no broker and no database; a changed
    byte in any file is named; a consistent forgery (manifest rewritten too) fails on the signature."""
    doc_id = _document_id(delivered["document"])
    out = relay.cli("audit", "export", doc_id, str(tmp_path / "bundle"))
    assert out.returncode == 0, out.stderr
    bundle = tmp_path / "bundle"
    mine = ["--trust", str(relay.settings.pki.resolve()), "--directory", str(relay.settings.topology.resolve())]
    ok = subprocess.run([sys.executable, "-m", "broker.cli", "audit", "verify-bundle", str(bundle), *mine],
                        capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ĐÃ XÁC THỰC: văn bản") and RECIPIENT in ok.stdout  # no setting: Vietnamese

    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    hop = sorted((forged / "hops").glob("*.json"))[0]
    hop.write_text(hop.read_text(encoding="utf-8").replace('"verdict":"', '"verdict":"x', 1), encoding="utf-8")
    bad = relay.cli("audit", "verify-bundle", str(forged), *mine)
    assert bad.returncode == 2 and "ERROR AUDIT_BROKEN:" in bad.stderr and hop.name in bad.stderr
    manifest = json.loads((forged / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"][f"hops/{hop.name}"] = hashlib.sha256(hop.read_bytes()).hexdigest()
    (forged / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    bad = relay.cli("audit", "verify-bundle", str(forged), *mine)
    assert bad.returncode == 2 and "signature does not verify" in bad.stderr


def test_audit_log_tampering_is_detected(relay: Relay, delivered: dict[str, bytes]) -> None:
    """verify-log passes on the untouched logs; a byte changed in one entry of one hub's SQLite store
    is reported with the hub and the entry number; a log cut behind a checkpoint is reported too."""
    assert relay.cli("audit", "checkpoint", "H41").returncode == 0
    ok = relay.cli("audit", "verify-log")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    db = Path(relay.settings.state_url) / "H14.sqlite3"
    with sqlite3.connect(db) as conn:
        seq, body = conn.execute("SELECT seq, body FROM audit WHERE hub = 'H14' ORDER BY seq LIMIT 1").fetchone()
        conn.execute("UPDATE audit SET body = ? WHERE hub = 'H14' AND seq = ?", (body.replace("H14", "H15", 1), seq))
    bad = relay.cli("audit", "verify-log")
    assert bad.returncode == 2
    assert "H14       " in bad.stdout and f"BROKEN at entry {seq}" in bad.stdout
    with sqlite3.connect(db) as conn:  # put it back, then cut H41's log behind its checkpoint
        conn.execute("UPDATE audit SET body = ? WHERE hub = 'H14' AND seq = ?", (body, seq))
    h41 = Path(relay.settings.state_url) / "H41.sqlite3"
    with sqlite3.connect(h41) as conn:
        last = conn.execute("SELECT max(seq) FROM checkpoints WHERE hub = 'H41'").fetchone()[0]
        conn.execute("DELETE FROM audit WHERE hub = 'H41' AND seq >= ?", (last,))
    cut = relay.cli("audit", "verify-log", "--hub", "H41")
    assert cut.returncode == 2 and "the log was cut" in cut.stdout
