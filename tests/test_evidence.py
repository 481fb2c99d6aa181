"""Evidence an auditor can trust (what is read is what was signed): the attacks of the evidence
review, each of which must now fail."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from lxml import etree

from broker.core import deployment, receipts, wire
from broker.core.edxml import E, Organ, ResponseFor, build_document, build_status, read
from broker.core.errors import AuditFailure, LienthongError
from broker.core.hop import Hop
from broker.core.hoprecords import HopRecord, sign_record, token_digest, utc_now
from broker.core.outcome import Inbound, Outcome
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign, sign_tree
from broker.core.topology import Topology
from broker.core.trust import RevocationPolicy, TrustStore
from broker.core.validation import check
from broker.ops.bundle import verify_bundle
from broker.relay import devpki
from broker.relay.amqp import blocking
from broker.relay.livetrust import LiveTrust
from broker.relay.metrics import trust_alerts
from broker.relay.revocation import OcspClient, distribution_points, fetch_crls
from broker.relay.timestamp import stamp
from broker.relay.timestamp import verify as verify_stamp
from broker.settings import PkiLayout
from tests import hops
from tests.bundles import trace, write_bundle
from tests.relay import Relay

ROOT = Path(__file__).resolve().parents[1]
SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"


@pytest.fixture(scope="module")
def trust(dev_pki: Path) -> TrustStore:
    return TrustStore.load(dev_pki)


def _key(dev_pki: Path, organ_id: str) -> SigningKey:
    return SigningKey.load(*PkiLayout(dev_pki).agency(organ_id))


def _sign(tree: etree._ElementTree, key: SigningKey) -> bytes:
    sign_tree(tree, key)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def _split_by_comment(el: etree._Element, at: int) -> None:
    """``<X>abcd</X>`` becomes ``<X>ab<!---->cd</X>``: the same text nodes, a comment between."""
    text = el.text or ""
    el.text = text[:at]
    comment = etree.Comment("")
    comment.tail = text[at:]
    el.insert(0, comment)


def _with_comments_everywhere(data: bytes) -> bytes:
    """What a hub on the path could do without breaking the signature: a comment in the middle of
    every text of the document (exclusive C14N without comments does not see them)."""
    tree = parse(data)
    for el in tree.getroot().iter():
        if isinstance(el.tag, str) and el.text and len(el.text.strip()) > 1 and len(el) == 0:
            _split_by_comment(el, len(el.text) // 2)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def test_document_id_split_by_a_comment_reads_as_signed(dev_pki: Path, topology: Topology,
                                                        trust: TrustStore) -> None:
    """A DocumentId of ``DOC<!---->-1`` verifies (the comment is not signed) and is read as the
    signed ``DOC-1``, never as ``DOC``."""
    tree = parse(build_document(Organ(SENDER, "xã"), [Organ(RECIPIENT, "xã")], subject="s", document_id="DOC-1"))
    doc_id = tree.getroot().find(f".//{E}MessageHeader/{E}DocumentId")
    assert doc_id is not None
    _split_by_comment(doc_id, 3)
    signed = _sign(tree, _key(dev_pki, SENDER))
    assert b"DOC<!---->-1" in signed
    checked = check(signed, trust=trust, topology=topology)
    assert checked.message.document_id == "DOC-1"


def test_status_response_for_split_by_a_comment_reads_as_signed(dev_pki: Path, topology: Topology,
                                                                trust: TrustStore) -> None:
    """A status whose ResponseFor DocumentId is ``DOC-1<!---->2`` is a status about ``DOC-12``
    (what the recipient signed), not about ``DOC-1``."""
    tree = parse(build_status(Organ(RECIPIENT, "xã"), ResponseFor(SENDER, "DOC-12"), "03"))
    rf = tree.getroot().find(f".//{E}ResponseFor/{E}DocumentId")
    assert rf is not None
    _split_by_comment(rf, 5)
    signed = _sign(tree, _key(dev_pki, RECIPIENT))
    assert b"DOC-1<!---->2" in signed
    message = check(signed, trust=trust, topology=topology).message
    assert message.response_for is not None and message.response_for.document_id == "DOC-12"


def test_comments_added_on_the_path_change_nothing_that_is_read(dev_pki: Path, topology: Topology,
                                                                trust: TrustStore) -> None:
    """A hub that splits every text of a signed document with comments keeps the signature valid
    (comments are not signed) but changes nothing the relay reads: sender, recipients, ids,
    subject, code, attachments, business type."""
    original = _sign(parse(build_document(Organ(SENDER, "Ủy ban xã"), [Organ(RECIPIENT, "Ủy ban xã")],
                                          subject="Công văn số một", document_id="000.00.51.H41,2026/11/24,12/UBND",
                                          attachments=[("a.txt", "text/plain", b"noi dung")])),
                     _key(dev_pki, SENDER))
    tampered = _with_comments_everywhere(original)
    assert tampered.count(b"<!---->") >= 8
    before = check(original, trust=trust, topology=topology).message
    after = check(tampered, trust=trust, topology=topology).message
    assert after == before
    assert read(parse(tampered)) == read(parse(original))


def test_receipt_split_by_comments_reads_as_signed(dev_pki: Path, trust: TrustStore) -> None:
    """A hub receipt whose fields a later hub splits with comments still verifies and reads as the
    issuing hub signed it (the bound SHA-256 is the whole one)."""
    key = SigningKey.load(*PkiLayout(dev_pki).hub("H41"))
    sha = "ab" * 32
    receipt = receipts.build(receipts.Receipt(kind="accepted", hub="H41", time=utc_now(), document_id="DOC-1",
                                              document_sha256=sha, sender=SENDER, recipients=(RECIPIENT,)), key)
    tampered = _with_comments_everywhere(receipt)
    assert tampered.count(b"<!---->") >= 4
    r = receipts.verify(tampered, trust).receipt
    assert (r.document_sha256, r.document_id, r.sender, r.recipients) == (sha, "DOC-1", SENDER, (RECIPIENT,))


@pytest.mark.broker
def test_same_document_other_bytes_is_refused_not_delivered_twice(rabbitmq_urls: tuple[str, str],
                                                                  tmp_path: Path) -> None:
    """A document, then the same document with a comment added (new bytes that still verify, as a
    hub on the path could make): the first is delivered, the second refused with
    DOCUMENT_ID_REUSED, parked, and its sender told by a signed rejection; the recipient gets the
    document once."""
    relay = Relay(tmp_path, *rabbitmq_urls)
    try:
        first = relay.document(SENDER, [RECIPIENT])
        second = _with_comments_everywhere(first)
        assert second != first
        check(second, trust=TrustStore.load(relay.settings.pki), topology=relay.topology)  # still verifies
        client = relay.client(SENDER)
        client.send(first)
        assert [i.body for i in relay.take(RECIPIENT, 1, timeout=60)] == [first]
        client.send(second)
        r = relay.rejection(SENDER)
        assert (r.code, r.hub, r.document_sha256) == ("DOCUMENT_ID_REUSED", "H41", hashlib.sha256(second).hexdigest())
        parked = relay.drain("H41", "parking", timeout=10)
        assert [p.body for p in parked] == [second]
        assert parked[0].headers["lt-code"] == "DOCUMENT_ID_REUSED"
        relay.wait_idle()
        assert relay.documents_waiting(RECIPIENT) == []
    finally:
        relay.close()


# --- every hub verifies the whole trace -----------------------------------------------------------

FAR = "001.00.31.H14"  # hub H14-D31: the path is H41 -> national -> H14 -> H14-D31


def _hop(dev_pki: Path, topology: Topology, hub: str) -> Hop:
    return hops.hop(dev_pki, topology, hub)


def _record(hub: str, digest: str, prev: str, to_hub: str, key: SigningKey) -> str:
    return sign_record(HopRecord(hub=hub, at=utc_now(), digest=digest, document_id="d", verdict="forwarded",
                                 targets=(f"hub:{to_hub}",), recipients=(FAR,), prev=prev,
                                 extra={"routes": f"hub:{to_hub}={FAR}", "kind": "document"}), key)


def _arrive(hop: Hop, body: bytes, trace: list[str], from_hub: str) -> Outcome:
    return hop.process(Inbound(body, {wire.H_TRACE: trace}, wire.link_exchange(from_hub)))


@pytest.fixture(scope="module")
def far_document(dev_pki: Path) -> bytes:
    return _sign(parse(build_document(Organ(SENDER, "xã"), [Organ(FAR, "xã")], subject="xa")), _key(dev_pki, SENDER))


def test_a_genuine_trace_passes_every_hub(dev_pki: Path, topology: Topology, far_document: bytes) -> None:
    """The baseline: the document crosses the four hubs, each checking the whole trace so far."""
    inbound = Inbound(far_document, {}, wire.agency_exchange(SENDER))
    for here in ("H41", "national", "H14", "H14-D31"):
        outcome = _hop(dev_pki, topology, here).process(inbound)
        assert outcome.verdict in ("forwarded", "delivered"), outcome.reason
        [onward] = [c for c in outcome.copies if c.headers.get(wire.H_KIND) == "edxml"]
        inbound = Inbound(far_document, onward.headers, wire.link_exchange(here))
    assert outcome.verdict == "delivered"


def test_a_record_written_in_another_hubs_name_is_refused(dev_pki: Path, topology: Topology,
                                                          far_document: bytes) -> None:
    """The national hub makes up the H41 record (signed with its own key: it has no other) and
    adds its genuine one.  Checking only the last record let the document in as if H41 had
    checked it; every record's signature is checked now."""
    digest = hashlib.sha256(far_document).hexdigest()
    national = SigningKey.load(*PkiLayout(dev_pki).hub("national"))
    forged = _record("H41", digest, "", "national", national)
    genuine = _record("national", digest, token_digest(forged), "H14", national)
    outcome = _arrive(_hop(dev_pki, topology, "H14"), far_document, [forged, genuine], "national")
    assert (outcome.verdict, outcome.code) == ("rejected", "TRACE_INVALID")
    assert "signature" in outcome.reason


def test_a_trace_that_skips_a_hub_is_refused(dev_pki: Path, topology: Topology, far_document: bytes) -> None:
    """Genuinely signed records that do not form a path of the topology (H41 straight to H14,
    the national hub skipped) are refused: the hubs of a trace must be neighbours in turn."""
    digest = hashlib.sha256(far_document).hexdigest()
    h41 = _record("H41", digest, "", "national", SigningKey.load(*PkiLayout(dev_pki).hub("H41")))
    h14 = _record("H14", digest, token_digest(h41), "H14-D31", SigningKey.load(*PkiLayout(dev_pki).hub("H14")))
    outcome = _arrive(_hop(dev_pki, topology, "H14-D31"), far_document, [h41, h14], "H14")
    assert (outcome.verdict, outcome.code) == ("rejected", "TRACE_INVALID")
    assert "not a route of the topology" in outcome.reason


# --- path rules -----------------------------------------------------------------------------------


def _signed_by(issued: devpki.Issued, chain: tuple[x509.Certificate, ...] = ()) -> bytes:
    doc = build_document(Organ(SENDER, "xã"), [Organ(RECIPIENT, "xã")], subject="chuỗi")
    return sign(doc, SigningKey(issued.key, issued.cert, chain))


@pytest.fixture(scope="module")
def root(dev_pki: Path) -> devpki.Issued:
    return devpki.load_root(dev_pki)


def _code(data: bytes, trust: TrustStore, topology: Topology) -> str:
    with pytest.raises(LienthongError) as info:
        check(data, trust=trust, topology=topology)
    return info.value.code


def test_a_ca_certificate_cannot_sign_documents(root: devpki.Issued, trust: TrustStore, topology: Topology) -> None:
    """A CA certificate issued under the trusted root, with the sender's code, signing a document
    is refused CERT_USAGE: certificate authorities issue certificates, agencies sign."""
    ca = devpki.issue(root, "a sub-CA", uid=SENDER, ca_cert=True)
    assert _code(_signed_by(ca), trust, topology) == "CERT_USAGE"


def test_a_certificate_for_other_uses_cannot_sign_documents(root: devpki.Issued, trust: TrustStore,
                                                            topology: Topology) -> None:
    """A certificate whose extended key usage says TLS server only is refused CERT_USAGE; one that
    says e-mail protection (the usual signature certificate) signs."""
    server = devpki.issue(root, "a web server", uid=SENDER, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert _code(_signed_by(server), trust, topology) == "CERT_USAGE"
    signer = devpki.issue(root, "a signer", uid=SENDER, eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    assert check(_signed_by(signer), trust=trust, topology=topology).message.sender.organ_id == SENDER


def test_path_length_is_enforced(root: devpki.Issued, trust: TrustStore, topology: Topology) -> None:
    """root (pathLen 1) -> sub-CA A (pathLen 0) -> sub-CA B -> signer: A allows no CA below it,
    so the chain is refused CERT_UNTRUSTED, though every signature in it is good."""
    a = devpki.issue(root, "sub-CA A", ca_cert=True)
    b = devpki.issue(a, "sub-CA B", ca_cert=True)
    leaf = devpki.issue(b, "signer under B", uid=SENDER)
    with pytest.raises(LienthongError) as info:
        check(_signed_by(leaf, (b.cert, a.cert)), trust=trust, topology=topology)
    assert info.value.code == "CERT_UNTRUSTED" and "path length" in info.value.message


def test_keyinfo_stuffed_with_certificates_is_refused_at_once(dev_pki: Path, trust: TrustStore,
                                                              topology: Topology) -> None:
    """A KeyInfo carrying 1,000 certificates (to make path building expensive) is refused
    SIG_PROFILE before any of them is parsed."""
    key = _key(dev_pki, SENDER)
    bogus = devpki.make_root("bogus").cert
    data = _signed_by(devpki.Issued(key.key, key.cert), tuple([bogus] * 999))
    started = time.perf_counter()
    assert _code(data, trust, topology) == "SIG_PROFILE"
    assert time.perf_counter() - started < 1.0


def test_a_failed_chain_is_remembered(trust: TrustStore) -> None:
    """A certificate that does not chain is refused once; the same certificate again gets the
    same refusal from the cache, without building the path again."""
    rogue = devpki.issue(devpki.make_root("rogue root"), "rogue", uid=SENDER).cert
    with pytest.raises(LienthongError) as first:
        trust.validate(rogue)
    with pytest.raises(LienthongError) as second:
        trust.validate(rogue)
    assert first.value.code == "CERT_UNTRUSTED" and second.value is first.value


# --- bundles are judged against the auditor's anchors ---------------------------------------------


def _forged_bundle(folder: Path, topology: Topology, topology_file: Path) -> Path:
    """What a forger builds with a throwaway PKI of its own (same hub ids and agency codes): a
    document "from" the sender, and a whole trace of hop records saying it crossed the four hubs
    into the recipient's inbox."""
    fake = devpki.init(folder.parent / "throwaway-pki", topology)
    keys = PkiLayout(fake)
    body = sign(build_document(Organ(SENDER, "xã"), [Organ(FAR, "xã")], subject="giả mạo", document_id="forged"),
                SigningKey.load(*keys.agency(SENDER)))
    digest = hashlib.sha256(body).hexdigest()
    files = {f"messages/{digest}.edxml": body,
             "trust/root-ca.pem": keys.anchor.read_bytes(),
             "trust/root-ca.crl.pem": (fake / "root-ca.crl.pem").read_bytes(),
             "directory.yaml": topology_file.read_bytes()}
    files.update({f"hops/{i:02d}.json": t.encode() for i, t in enumerate(trace(keys, digest, "forged", FAR))})
    files.update({f"hubs/{h}.pem": keys.hub(h)[1].read_bytes() for h in topology.hubs})
    write_bundle(folder, files, "forged")
    return fake


def test_a_bundle_made_with_a_throwaway_pki_is_not_verified(dev_pki: Path, topology: Topology,
                                                           tmp_path: Path) -> None:
    """A bundle that ships its own root, hub certificates and directory, with a forged "delivered"
    hop record: judged by what it ships, it verifies; judged by the auditor's own trust anchors
    (``verify-bundle --trust``), it is refused, naming the untrusted hub certificate."""
    topology_file = ROOT / "config" / "topology.yaml"
    fake = _forged_bundle(tmp_path / "bundle", topology, topology_file)
    assert verify_bundle(tmp_path / "bundle", trust=TrustStore.load(fake), directory=topology).delivered_to == [FAR]
    with pytest.raises(AuditFailure) as info:
        verify_bundle(tmp_path / "bundle", trust=TrustStore.load(dev_pki), directory=topology)
    assert "is not a hub certificate you trust" in info.value.message and "CERT_UNTRUSTED" in info.value.message
    cli = subprocess.run([sys.executable, "-m", "broker.cli", "audit", "verify-bundle", str(tmp_path / "bundle"),
                          "--trust", str(dev_pki), "--directory", str(topology_file)],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and "ERROR AUDIT_BROKEN" in cli.stderr and "VERIFIED" not in cli.stdout


# --- time: the signer is judged when the document entered -----------------------------------------


def test_a_document_that_waited_past_its_signers_expiry_still_crosses(dev_pki: Path, topology: Topology,
                                                                     root: devpki.Issued) -> None:
    """The signer's certificate was valid for one second, three minutes ago, when the entry hub
    accepted the document (its signed hop record says when).  Later hubs judge the certificate
    at that moment and pass the document on; handed in now at the entry hub, it is refused."""
    then = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    old = devpki.issue(root, "expired since", uid=SENDER, not_before=then, days=0)
    body = sign(build_document(Organ(SENDER, "xã"), [Organ(FAR, "xã")], subject="chờ lâu"),
                SigningKey(old.key, old.cert))
    digest = hashlib.sha256(body).hexdigest()
    accepted_at = then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    keys = PkiLayout(dev_pki)
    entry = sign_record(HopRecord(hub="H41", at=accepted_at, digest=digest, document_id="d", verdict="forwarded",
                                  targets=("hub:national",), recipients=(FAR,),
                                  extra={"routes": f"hub:national={FAR}", "kind": "document"}),
                        SigningKey.load(*keys.hub("H41")))
    national = _record("national", digest, token_digest(entry), "H14", SigningKey.load(*keys.hub("national")))
    later = _arrive(_hop(dev_pki, topology, "H14"), body, [entry, national], "national")
    assert later.verdict == "forwarded", later.reason
    today = _hop(dev_pki, topology, "H41").process(Inbound(body, {}, wire.agency_exchange(SENDER)))
    assert (today.verdict, today.code) == ("rejected", "CERT_EXPIRED")


# --- recipients verify before they take -----------------------------------------------------------


@pytest.mark.broker
def test_recipients_refuse_what_the_last_hub_should_not_have_delivered(rabbitmq_urls: tuple[str, str],
                                                                       tmp_path: Path) -> None:
    """The recipient's hub puts three messages straight into the recipient's inbox (a hub may): the
    genuine document with its genuine trace, altered bytes under that trace, and another signed
    document that never crossed the relay (no trace).  The SDK hands over the first only; the
    other two are taken out and refused with their code, and the sender gets the recipient's
    signed status 02 naming it for each."""
    relay = Relay(tmp_path, *rabbitmq_urls)
    try:
        doc = relay.document(SENDER, [RECIPIENT], subject="bản gốc")
        relay.client(SENDER).send(doc)
        relay.wait_idle()
        [genuine] = relay.drain("H14-D31", wire.inbox_queue(RECIPIENT), timeout=30)
        hub_url, hub_user = relay.hub_url("H14-D31"), relay.names.hub_user("H14-D31")
        altered = doc.replace("bản gốc".encode(), "bản sửa".encode())
        untraced = relay.document(SENDER, [RECIPIENT], subject="đi tắt")
        for body, headers in ((doc, genuine.headers), (altered, genuine.headers), (untraced, {wire.H_KIND: "edxml"})):
            blocking.publish(hub_url, wire.EX_INBOX, RECIPIENT, body, message_id=hashlib.sha256(body).hexdigest(),
                              user_id=hub_user, headers=headers)
        client = relay.client(RECIPIENT)
        handed: list[bytes] = []
        client.fetch(lambda item: handed.append(item.body) if item.kind == "edxml" else None, wait=2.0)
        assert handed == [doc]
        refused = {i.body: e for i, e in client.refused}
        assert set(refused) == {altered, untraced}
        assert refused[altered].code == "TRACE_INVALID" and "other bytes" in refused[altered].message
        assert refused[untraced].code == "TRACE_INVALID" and "no hop record" in refused[untraced].message
        assert relay.documents_waiting(RECIPIENT) == []
        answers = relay.take(SENDER, 2, timeout=60, accept=lambda i: i.kind == "edxml")
        trust = TrustStore.load(relay.settings.pki)
        for answer in answers:
            status = check(answer.body, trust=trust, topology=relay.topology).message
            assert (status.kind, status.status_code, status.sender.organ_id) == ("status", "02", RECIPIENT)
            assert b"TRACE_INVALID" in answer.body
        assert len(answers) == 2
    finally:
        relay.close()


# --- revocation stays current ---------------------------------------------------------------------


@pytest.fixture()
def own_pki(dev_pki: Path, tmp_path: Path) -> Path:
    """A copy of the session's dev PKI this test may revoke in."""
    copy = tmp_path / "pki"
    shutil.copytree(dev_pki, copy)
    return copy


def test_a_new_crl_on_disk_is_used_at_once(own_pki: Path) -> None:
    """A hub's trust store validated a signer (and cached the answer until the CRL's nextUpdate);
    the CA's new CRL revoking that signer is dropped into the directory: the next validation
    re-reads it and refuses CERT_REVOKED, without a restart."""
    store = LiveTrust(own_pki)
    cert = x509.load_pem_x509_certificate(PkiLayout(own_pki).agency(SENDER)[1].read_bytes())
    store.current().validate(cert)
    devpki.revoke(own_pki, [PkiLayout(own_pki).agency(SENDER)[1]])
    assert store.refresh(every=0) is True
    with pytest.raises(LienthongError) as info:
        store.current().validate(cert)
    assert info.value.code == "CERT_REVOKED"
    assert store.refresh(every=0) is False  # nothing changed since


def test_an_overdue_crl_counts_only_within_the_grace_the_policy_gives(own_pki: Path) -> None:
    """The CA's CRL was due ten days ago.  By default the hub refuses (CRL_UNAVAILABLE); with a
    grace of eleven days it accepts (and its trust alerts say the CRL is out of date); with
    nine days it refuses again."""
    root = devpki.load_root(own_pki)
    overdue = devpki.make_crl(root, [], days=30, last_update=datetime.now(UTC) - timedelta(days=40))
    (own_pki / "root-ca.crl.pem").write_bytes(overdue.public_bytes(Encoding.PEM))
    cert = x509.load_pem_x509_certificate(PkiLayout(own_pki).agency(SENDER)[1].read_bytes())
    with pytest.raises(LienthongError) as info:
        TrustStore.load(own_pki).validate(cert)
    assert info.value.code == "CRL_UNAVAILABLE"
    lenient = RevocationPolicy.of(deployment.read({"revocation": {"grace_hours": 11 * 24}}).revocation)
    assert TrustStore.load(own_pki, policy=lenient).validate(cert).path[0] == cert
    kinds = [k for k, _ in trust_alerts("H41", cert, TrustStore.load(own_pki, policy=lenient))]
    assert "crl-out-of-date" in kinds
    strict = RevocationPolicy.of(deployment.read({"revocation": {"grace_hours": 9 * 24}}).revocation)
    with pytest.raises(LienthongError):
        TrustStore.load(own_pki, policy=strict).validate(cert)


# --- checkpoints witnessed outside the hub --------------------------------------------------------


@pytest.mark.broker
def test_a_log_cut_with_its_checkpoints_is_found_by_a_neighbours_witness(rabbitmq_urls: tuple[str, str],
                                                                          tmp_path: Path) -> None:
    """Hubs hand their signed checkpoints to their neighbours, which countersign them in their own
    logs.  H41's operator then cuts H41's log and its own checkpoints after the first entry:
    H41's log alone still looks intact (the cut took the checkpoints with it), but verify-log
    finds what the national hub witnessed missing, and says so."""
    relay = Relay(tmp_path, *rabbitmq_urls, env={"LIENTHONG_CHECKPOINT_SECONDS": "0.5"})
    try:
        doc = relay.document(SENDER, [RECIPIENT])
        relay.client(SENDER).send(doc)
        assert [i.body for i in relay.take(RECIPIENT, 1, timeout=60)] == [doc]
        national = Path(relay.settings.state_url) / "national.sqlite3"
        h41 = Path(relay.settings.state_url) / "H41.sqlite3"
        deadline = time.monotonic() + 30
        witnessed = 0
        while time.monotonic() < deadline and not witnessed:
            with sqlite3.connect(national) as conn:
                rows = conn.execute("SELECT body FROM audit WHERE kind = 'witness'").fetchall()
            witnessed = sum(1 for (body,) in rows if '"of":"H41"' in json.loads(body)["witness"])
            time.sleep(0.3)
        assert witnessed, "no checkpoint of H41 was witnessed by the national hub"
        relay.stop_workers("H41")
        ok = relay.cli("audit", "verify-log", "--hub", "H41")
        assert ok.returncode == 0 and "intact" in ok.stdout and " 0 witnessed" not in ok.stdout, ok.stdout
        with sqlite3.connect(h41) as conn:  # the operator cuts the tail and its own checkpoints
            conn.execute("DELETE FROM audit WHERE hub = 'H41' AND seq > 1")
            conn.execute("DELETE FROM checkpoints WHERE hub = 'H41'")
        cut = relay.cli("audit", "verify-log", "--hub", "H41")
        assert cut.returncode == 2, cut.stdout + cut.stderr
        assert "the log was cut: hub national witnessed entry" in cut.stdout
    finally:
        relay.close()


def test_crls_are_fetched_from_where_the_ca_publishes_them(own_pki: Path, tmp_path: Path,
                                                           ca_site: tuple[str, dict[str, bytes]]) -> None:
    """The CA publishes a new CRL revoking a signer: the fetcher downloads it into the CRL cache
    and the trust store judges with it (CERT_REVOKED); a CRL signed by another CA, and a URL
    that answers nothing, are refused and kept out."""
    base, files = ca_site
    cache = tmp_path / "crls"
    store = LiveTrust(own_pki, crl_cache=cache)
    cert = x509.load_pem_x509_certificate(PkiLayout(own_pki).agency(SENDER)[1].read_bytes())
    store.current().validate(cert)
    root = devpki.load_root(own_pki)
    files["/root.crl"] = devpki.make_crl(root, [cert.serial_number]).public_bytes(Encoding.DER)
    files["/rogue.crl"] = devpki.make_crl(devpki.make_root("rogue"), []).public_bytes(Encoding.DER)
    report = fetch_crls(store.current(), cache, [f"{base}/root.crl", f"{base}/rogue.crl", f"{base}/gone.crl"])
    assert report.fetched == [f"{base}/root.crl"]
    assert [u for u, _ in report.refused] == [f"{base}/rogue.crl", f"{base}/gone.crl"]
    assert "not signed by a CA of the trust store" in report.refused[0][1]
    assert len(list(cache.glob("*.crl"))) == 1
    assert store.refresh(every=0) is True
    with pytest.raises(LienthongError) as info:
        store.current().validate(cert)
    assert info.value.code == "CERT_REVOKED"
    assert fetch_crls(store.current(), cache, [f"{base}/root.crl"]).unchanged == [f"{base}/root.crl"]


def test_distribution_points_are_read_from_certificates(root: devpki.Issued) -> None:
    """The URLs a CA certificate names for its CRL are what the fetcher fetches, besides the
    configured ones."""
    builder = (x509.CertificateBuilder().subject_name(root.cert.subject).issuer_name(root.cert.subject)
               .public_key(root.key.public_key()).serial_number(1)
               .not_valid_before(root.cert.not_valid_before_utc).not_valid_after(root.cert.not_valid_after_utc)
               .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                   [x509.UniformResourceIdentifier("http://ca.example/root.crl"),
                    x509.UniformResourceIdentifier("ldap://ca.example/root")], None, None, None)]), critical=False))
    cert = builder.sign(root.key, hashes.SHA256())
    assert distribution_points([cert, cert]) == ["http://ca.example/root.crl"]


@pytest.mark.broker
def test_a_running_hub_fetches_the_new_crl_and_refuses_the_revoked_signer(
        rabbitmq_urls: tuple[str, str], tmp_path: Path, ca_site: tuple[str, dict[str, bytes]]) -> None:
    """The hubs run with the CA's CRL URL configured (settings.revocation.crl_urls).  The CA
    revokes the sender's certificate and publishes its CRL; without a restart, the sender's hub
    fetches it and refuses the sender's next document CERT_REVOKED, telling the sender."""
    base, files = ca_site
    relay = Relay(tmp_path, *rabbitmq_urls, env={"LIENTHONG_CRL_FETCH_SECONDS": "0.5"},
                  settings={"revocation": {"crl_urls": [f"{base}/root.crl"]}})
    try:
        before = relay.document(SENDER, [RECIPIENT], subject="trước")
        relay.client(SENDER).send(before)
        assert [i.body for i in relay.take(RECIPIENT, 1, timeout=60)] == [before]
        cert = x509.load_pem_x509_certificate(relay.settings.keys.agency(SENDER)[1].read_bytes())
        files["/root.crl"] = devpki.make_crl(devpki.load_root(relay.settings.pki),
                                             [cert.serial_number]).public_bytes(Encoding.DER)
        deadline = time.monotonic() + 30
        while not list((relay.settings.data_dir / "crls").glob("*.crl")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(6)  # a trust store looks at its directories at most every 5 s
        after = relay.document(SENDER, [RECIPIENT], subject="sau")
        relay.client(SENDER).send(after)
        assert relay.rejection(SENDER).code == "CERT_REVOKED"
    finally:
        relay.close()


class _Responder(http.server.BaseHTTPRequestHandler):
    """An OCSP responder on loopback, signing with the CA's key: ``revoked`` serials are revoked."""

    ca: devpki.Issued
    revoked: set[int] = set()
    asked: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        request = ocsp.load_der_ocsp_request(self.rfile.read(int(self.headers["Content-Length"])))
        self.asked.append(request.serial_number)
        now = datetime.now(UTC)
        subject = next(c for c in self.certs if c.serial_number == request.serial_number)
        revoked = request.serial_number in self.revoked
        response = (ocsp.OCSPResponseBuilder()
                    .add_response(cert=subject, issuer=self.ca.cert, algorithm=hashes.SHA1(),
                                  cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                                  this_update=now - timedelta(minutes=1), next_update=now + timedelta(hours=1),
                                  revocation_time=now - timedelta(days=1) if revoked else None,
                                  revocation_reason=None)
                    .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca.cert)
                    .sign(self.ca.key, hashes.SHA256()))
        body = response.public_bytes(Encoding.DER)
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_ocsp_answers_when_no_current_crl_does(own_pki: Path) -> None:
    """With no CRL in the trust store a signer's status is unknown (CRL_UNAVAILABLE).  With an
    OCSP responder the hub asks it: a good signer passes, a revoked one is refused CERT_REVOKED,
    and a second question about the same signer is answered from the cache."""
    (own_pki / "root-ca.crl.pem").unlink()
    root = devpki.load_root(own_pki)
    good = x509.load_pem_x509_certificate(PkiLayout(own_pki).agency(SENDER)[1].read_bytes())
    bad = x509.load_pem_x509_certificate(PkiLayout(own_pki).agency(RECIPIENT)[1].read_bytes())
    handler = type("Ocsp", (_Responder,), {"ca": root, "certs": [good, bad], "revoked": {bad.serial_number},
                                           "asked": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(LienthongError) as unknown:
            TrustStore.load(own_pki).validate(good)
        assert unknown.value.code == "CRL_UNAVAILABLE"
        client = OcspClient(f"http://127.0.0.1:{server.server_address[1]}/")
        store = TrustStore.load(own_pki, status_source=client)
        assert store.validate(good).path[0] == good
        with pytest.raises(LienthongError) as revoked:
            store.validate(bad)
        assert revoked.value.code == "CERT_REVOKED" and "OCSP" in revoked.value.message
        asked = client.asked
        assert client.status(good, root.cert) is not None and client.asked == asked  # from the cache
        assert handler.asked == [good.serial_number, bad.serial_number]
    finally:
        server.shutdown()


def test_an_ocsp_answer_signed_by_someone_else_counts_for_nothing(own_pki: Path) -> None:
    """A responder that signs "good" with a key the issuer never delegated is not believed: the
    status stays unknown (CRL_UNAVAILABLE)."""
    (own_pki / "root-ca.crl.pem").unlink()
    good = x509.load_pem_x509_certificate(PkiLayout(own_pki).agency(SENDER)[1].read_bytes())
    rogue = devpki.make_root("lienthong dev root CA")  # same name, another key
    handler = type("Ocsp", (_Responder,), {"ca": rogue, "certs": [good], "revoked": set(), "asked": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = TrustStore.load(own_pki, status_source=OcspClient(f"http://127.0.0.1:{server.server_address[1]}/"))
        with pytest.raises(LienthongError) as info:
            store.validate(good)
        assert info.value.code == "CRL_UNAVAILABLE" and handler.asked == [good.serial_number]
    finally:
        server.shutdown()


# --- RFC 3161 time-stamps on checkpoints ----------------------------------------------------------

TSA_CONFIG = """[ tsa ]
default_tsa = local
[ local ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@pytest.fixture()
def tsa(dev_pki: Path, tmp_path: Path) -> Iterator[str]:
    """A time-stamping authority on loopback: ``openssl ts -reply`` with a certificate from the dev
    root (extended key usage time-stamping, critical, as RFC 3161 asks)."""
    d = tmp_path / "tsa"
    d.mkdir()
    issued = devpki.issue(devpki.load_root(dev_pki), "lienthong test TSA", kind="ec",
                          eku=[ExtendedKeyUsageOID.TIME_STAMPING], eku_critical=True)
    (d / "tsa.pem").write_bytes(devpki.pem_cert(issued.cert))
    (d / "tsa.key").write_bytes(devpki.pem_key(issued.key))
    (d / "serial").write_text("01\n")
    (d / "tsa.cnf").write_text(TSA_CONFIG.format(dir=d))

    class Authority(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            query = d / f"q{threading.get_ident()}.tsq"
            query.write_bytes(self.rfile.read(int(self.headers["Content-Length"])))
            reply = subprocess.run(["openssl", "ts", "-reply", "-config", str(d / "tsa.cnf"), "-queryfile",
                                    str(query), "-out", "/dev/stdout"], capture_output=True, check=True).stdout
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Authority)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_time_stamp_vouches_for_exactly_its_checkpoint(tsa: str, dev_pki: Path) -> None:
    """The authority's answer verifies for the checkpoint it was asked about and names a time
    within the last minute; for any other bytes, or against another CA, it does not verify."""
    token = b'{"hub":"H41","seq":"7"}.signature'
    tsr = stamp(tsa, token)
    when = verify_stamp(token, tsr, PkiLayout(dev_pki).anchor)
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60
    with pytest.raises(AuditFailure):
        verify_stamp(token + b"x", tsr, PkiLayout(dev_pki).anchor)
    other = Path(tempfile.mkdtemp()) / "other.pem"
    other.write_bytes(devpki.pem_cert(devpki.make_root("another CA").cert))
    with pytest.raises(AuditFailure):
        verify_stamp(token, tsr, other)


@pytest.mark.broker
def test_hubs_time_stamp_their_checkpoints_and_verify_log_checks_them(
        rabbitmq_urls: tuple[str, str], tmp_path: Path, tsa: str, dev_pki: Path) -> None:
    """With settings.audit.tsa_url, a hub has each new checkpoint time-stamped; verify-log --tsa-ca
    checks every stamp, and names a checkpoint whose stamp was altered."""
    relay = Relay(tmp_path / "relay", *rabbitmq_urls, env={"LIENTHONG_CHECKPOINT_SECONDS": "0.5"},
                  settings={"audit": {"tsa_url": tsa}})
    try:
        doc = relay.document(SENDER, [RECIPIENT])
        relay.client(SENDER).send(doc)
        assert [i.body for i in relay.take(RECIPIENT, 1, timeout=60)] == [doc]
        h41 = Path(relay.settings.state_url) / "H41.sqlite3"
        deadline = time.monotonic() + 30
        stamped = 0
        while time.monotonic() < deadline and not stamped:
            with sqlite3.connect(h41) as conn:
                stamped = conn.execute("SELECT count(*) FROM timestamps WHERE hub = 'H41'").fetchone()[0]
            time.sleep(0.3)
        assert stamped
        relay.stop_workers("H41")
        anchor = str(PkiLayout(dev_pki).anchor)  # the authority's CA, not the relay's
        ok = relay.cli("audit", "verify-log", "--hub", "H41", "--tsa-ca", anchor)
        assert ok.returncode == 0 and "intact" in ok.stdout and " 0 time-stamped" not in ok.stdout, ok.stdout
        assert "time-stamped: entry" in ok.stdout and "UTC (by the authority's clock)" in ok.stdout
        unchecked = relay.cli("audit", "verify-log", "--hub", "H41")  # stamps there, no CA to check them with
        assert unchecked.returncode == 2 and "time-stamps not checked (give --tsa-ca)" in unchecked.stdout
        assert "ERROR AUDIT_INCOMPLETE" in unchecked.stderr
        with sqlite3.connect(h41) as conn:
            seq, tsr = conn.execute("SELECT seq, tsr FROM timestamps WHERE hub = 'H41' LIMIT 1").fetchone()
            conn.execute("UPDATE timestamps SET tsr = ? WHERE hub = 'H41' AND seq = ?",
                         (bytes(tsr[:-5]) + bytes(5), seq))
        bad = relay.cli("audit", "verify-log", "--hub", "H41", "--tsa-ca", anchor)
        assert bad.returncode == 2 and f"the time-stamp of checkpoint {seq} does not verify" in bad.stdout
    finally:
        relay.close()


class _Authority(http.server.BaseHTTPRequestHandler):
    """A time-stamping authority that answers wrongly: ``mode`` "html" (an error page, as a proxy
    in the way would), "nonce" (a genuine stamp of the same data for another request, another
    nonce), "imprint" (a genuine stamp of other data)."""

    mode = "html"
    tsa_dir = Path()

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        asked = self.rfile.read(int(self.headers["Content-Length"]))
        d = self.tsa_dir
        if self.mode == "html":
            answer = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        else:
            other = d / f"other-{threading.get_ident()}.tsq"
            if self.mode == "nonce":  # the same imprint, asked by someone else (with a random nonce)
                at = asked.index(b"\x04\x20")  # the imprint: an OCTET STRING of 32 bytes
                query = ["openssl", "ts", "-query", "-digest", asked[at + 2:at + 34].hex(), "-sha256", "-cert",
                         "-out", str(other)]
            else:
                (d / "data").write_bytes(b"other bytes")
                query = ["openssl", "ts", "-query", "-data", str(d / "data"), "-sha256", "-cert", "-out", str(other)]
            subprocess.run(query, check=True, capture_output=True)
            answer = subprocess.run(["openssl", "ts", "-reply", "-config", str(d / "tsa.cnf"), "-queryfile",
                                     str(other), "-out", "/dev/stdout"], capture_output=True, check=True).stdout
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.mode == "html" else "application/timestamp-reply")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["html", "nonce", "imprint"])
def test_an_answer_that_is_not_a_stamp_of_this_request_is_not_kept(tsa: str, dev_pki: Path, tmp_path: Path,
                                                                  mode: str) -> None:
    """What the review stored as stamps is refused before it is kept: an HTML page, a genuine stamp
    of the same checkpoint made for another request (another nonce), a genuine stamp of other
    bytes.  The hub keeps nothing and raises a time-stamp-failed alert; the right authority's
    answer to the same checkpoint is kept."""
    from structlog.testing import capture_logs

    from broker.logs import get_logger
    from broker.relay.checkpoints import time_stamp
    from broker.relay.store import open_store

    tsa_dir = tmp_path / "tsa"  # where the tsa fixture keeps its key and configuration
    handler = type("Wrong", (_Authority,), {"mode": mode, "tsa_dir": tsa_dir})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = open_store(str(tmp_path / "state"), hub="H41")
    token = '{"hub":"H41","seq":"3"}.signature'
    try:
        with pytest.raises(AuditFailure):
            stamp(f"http://127.0.0.1:{server.server_address[1]}/", token.encode())
        with capture_logs() as logs:
            time_stamp(store, "H41", f"http://127.0.0.1:{server.server_address[1]}/", 3, token, get_logger())
        assert store.timestamps("H41") == {}
        assert [e.get("kind") for e in logs] == ["time-stamp-failed"]
    finally:
        server.shutdown()
    time_stamp(store, "H41", tsa, 3, token, get_logger())
    assert verify_stamp(token.encode(), store.timestamps("H41")[3], PkiLayout(dev_pki).anchor)
