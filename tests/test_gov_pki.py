"""The government CA's own material and its older generation.

A trust store is read from the files the CA publishes: its RSA-4096 G2 root and CRLs in DER,
others in PEM, whatever their names say; a file that is neither is named in the error.  SHA-1
(certificates of the G1 chain, RSA-SHA1 signatures of old USB tokens) is refused with a stable
code unless the directory entry of the sender says ``legacy_sha1``, and then the result says what
used it: through the full hub check, the hop, and a real relay whose worker raises the alert.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from broker.core import errors, receipts, wire
from broker.core.algorithms import DIGESTS, DS, SIGNATURE_METHODS
from broker.core.cafiles import read_directory
from broker.core.edxml import Organ, build_document
from broker.core.outcome import Inbound, Outcome
from broker.core.parsing import parse
from broker.core.routing import PARKING, Target
from broker.core.signer import SigningKey, sign, sign_tree, sign_value
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check, summary
from broker.relay import devpki
from broker.relay.livetrust import LiveTrust
from tests import govpki, hops
from tests.relay import ROOT, Relay

LEGACY, STRICT, RECIPIENT = "000.00.00.G22", "000.00.00.G17", "000.00.00.H41"  # G22's entry: legacy_sha1


def _directory(legacy: tuple[str, ...] = (LEGACY,)) -> Any:
    raw = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    for entry in raw["agencies"]:
        if entry["organ_id"] in legacy:
            entry["legacy_sha1"] = True
    return raw


@pytest.fixture(scope="module")
def directory() -> Topology:
    """The sample directory, G22 marked legacy_sha1 (and nobody else)."""
    return Topology.from_dict(_directory())


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory, dev_pki: Path) -> govpki.GovPki:
    """Both government CA generations in one trust store directory, beside the dev root (whose
    hubs sign hop records)."""
    pki = govpki.make(tmp_path_factory.mktemp("gov") / "trust")
    for name in ("root-ca.pem", "root-ca.crl.pem"):
        shutil.copy(dev_pki / name, pki.directory / name)
    return pki


def _document(sender: str, subject: str = "Công văn liên thông") -> bytes:
    return build_document(Organ(sender, "cơ quan gửi"), [Organ(RECIPIENT, "UBND tỉnh Nghệ An")], subject=subject,
                          attachments=[("cv.pdf", "application/pdf", b"%PDF-1.4 " + os.urandom(2000))])


def _signed(issued: devpki.Issued, sender: str, *, sha1: bool = False) -> bytes:
    """``sender``'s document signed with ``issued``; RSA-SHA1 over a SHA-1 digest when ``sha1``
    (what the older USB tokens make)."""
    key = SigningKey(issued.key, issued.cert)
    if not sha1:
        return sign(_document(sender), key)
    tree = parse(_document(sender))
    sign_tree(tree, key, digest=DIGESTS["http://www.w3.org/2000/09/xmldsig#sha1"])
    signed_info = next(tree.getroot().iter(DS + "SignedInfo"))
    method = SIGNATURE_METHODS["http://www.w3.org/2000/09/xmldsig#rsa-sha1"]
    signed_info.find(DS + "SignatureMethod").set("Algorithm", method.uri)
    value = sign_value(key.key, method, etree.tostring(signed_info, method="c14n", exclusive=True))
    next(tree.getroot().iter(DS + "SignatureValue")).text = base64.b64encode(value).decode()
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


# --- the CA's own files -------------------------------------------------------------------------


def test_the_cas_files_make_the_trust_store(gov: govpki.GovPki, dev_pki: Path) -> None:
    """The G2 root (RSA-4096, DER .cer), its DER CRL, a DER subordinate CA and the PEM G1 root are
    all read: anchors, intermediate and every CRL."""
    store = TrustStore.load(gov.directory)
    dev_root = devpki.load_root(dev_pki).cert
    assert {a.subject for a in store.anchors} == {gov.g2.cert.subject, gov.g1.cert.subject, dev_root.subject}
    g2 = next(a for a in store.anchors if a.subject == gov.g2.cert.subject)
    key = g2.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    assert [c.subject for c in store.intermediates] == [gov.ca.cert.subject]
    assert {c.issuer for c in store.crls} >= {gov.g2.cert.subject, gov.ca.cert.subject, gov.g1.cert.subject}


def test_document_under_the_g2_root_passes_the_hub_check(gov: govpki.GovPki, directory: Topology) -> None:
    """An agency certified by a CA under the RSA-4096 G2 root (both DER files in the store) signs
    a document: the full hub check accepts it, the path ends at G2, and nothing is legacy."""
    agency = gov.agency(STRICT)
    checked = check(_signed(agency, STRICT), trust=TrustStore.load(gov.directory), topology=directory)
    assert [c.subject for c in checked.signature.chain.path] == [agency.cert.subject, gov.ca.cert.subject,
                                                                 gov.g2.cert.subject]
    assert checked.legacy == () and "legacy_sha1" not in summary(checked)


def test_a_der_crl_counts(gov: govpki.GovPki, directory: Topology, tmp_path: Path) -> None:
    """The G2 root's CRL in DER is what speaks for the subordinate CA: without it the check
    cannot tell (CRL_UNAVAILABLE); a DER CRL revoking the CA refuses the document (CERT_REVOKED)."""
    trust = tmp_path / "trust"
    shutil.copytree(gov.directory, trust)
    data = _signed(gov.agency(STRICT), STRICT)
    (trust / "RootCA-G2.crl").unlink()
    with pytest.raises(errors.RevocationUnknown):
        check(data, trust=TrustStore.load(trust), topology=directory)
    revoking = devpki.make_crl(gov.g2, [gov.ca.cert.serial_number])
    (trust / "RootCA-G2.crl").write_bytes(revoking.public_bytes(Encoding.DER))
    with pytest.raises(errors.Revoked) as info:
        check(data, trust=TrustStore.load(trust), topology=directory)
    assert info.value.code == "CERT_REVOKED"


def test_content_decides_not_the_name(gov: govpki.GovPki, tmp_path: Path) -> None:
    """A PEM certificate named .cer and a DER CRL named .der are read for what they are."""
    (tmp_path / "root.cer").write_bytes(gov.g2.cert.public_bytes(Encoding.PEM))
    (tmp_path / "root-crl.der").write_bytes(devpki.make_crl(gov.g2).public_bytes(Encoding.DER))
    store = TrustStore.load(tmp_path)
    assert [a.subject for a in store.anchors] == [gov.g2.cert.subject]
    assert [c.issuer for c in store.crls] == [gov.g2.cert.subject]


@pytest.mark.parametrize(("name", "content"), [
    ("junk.crt", os.urandom(300)), ("empty.crl", b""), ("only-a-key.pem", b""),
    ("truncated.cer", b"0\x82\x05\x00\x30\x82"),
])
def test_a_file_that_is_neither_is_named(gov: govpki.GovPki, tmp_path: Path, name: str, content: bytes) -> None:
    """A trust store file that holds no certificate and no CRL is a CONFIG error naming it."""
    if name == "only-a-key.pem":
        content = devpki.pem_key(devpki.new_key("ec"))
    (tmp_path / "root.cer").write_bytes(gov.g2.cert.public_bytes(Encoding.DER))
    (tmp_path / name).write_bytes(content)
    with pytest.raises(errors.ConfigError) as info:
        TrustStore.load(tmp_path)
    assert info.value.code == "CONFIG" and name in info.value.message


def test_cli_names_the_broken_file(gov: govpki.GovPki, tmp_path: Path, dev_pki: Path) -> None:
    """``lienthong verify --trust`` on a directory with a broken file: one line naming it, exit 2."""
    import subprocess
    import sys
    (tmp_path / "root.cer").write_bytes(gov.g2.cert.public_bytes(Encoding.DER))
    (tmp_path / "broken.crl").write_bytes(b"not a CRL at all")
    (tmp_path / "doc.edxml").write_bytes(_signed(gov.agency(STRICT), STRICT))
    done = subprocess.run([sys.executable, "-m", "broker.cli", "verify", str(tmp_path / "doc.edxml"), "--trust",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("ERROR CONFIG: trust store file broken.crl")
    assert "Traceback" not in done.stderr


def test_a_running_store_sees_new_der_files_and_survives_a_broken_one(gov: govpki.GovPki, directory: Topology,
                                                                     tmp_path: Path) -> None:
    """The change watch covers the DER suffixes: a DER CRL dropped in revokes at once; a broken
    file dropped in later keeps the store as it was instead of failing the hub."""
    trust = tmp_path / "trust"
    shutil.copytree(gov.directory, trust)
    store = LiveTrust(trust)
    data = _signed(gov.agency(STRICT), STRICT)
    check(data, trust=store.current(), topology=directory)
    (trust / "RootCA-G2.crl").write_bytes(
        devpki.make_crl(gov.g2, [gov.ca.cert.serial_number]).public_bytes(Encoding.DER))
    assert store.refresh(every=0)
    with pytest.raises(errors.Revoked):
        check(data, trust=store.current(), topology=directory)
    (trust / "new-root.cer").write_bytes(devpki.make_root("another root").cert.public_bytes(Encoding.DER))
    (trust / "half-written.crl").write_bytes(b"\x30\x82\x01")
    assert not store.refresh(every=0)
    assert len(store.current().anchors) == 3  # G2, G1, dev root: not the new one, nothing lost


def test_an_evidence_bundle_carries_the_cas_der_files(gov: govpki.GovPki, dev_pki: Path, tmp_path: Path) -> None:
    """``audit export`` ships the trust store's CA files whatever their form: the DER subordinate
    CA and DER CRLs go into the bundle's trust/ folder, where verify-bundle reads them."""
    from broker.core.auditlog import AuditRow
    from broker.ops.audit import Trail
    from broker.ops.bundle import export_bundle

    pki = tmp_path / "pki"
    shutil.copytree(dev_pki, pki)
    for f in gov.directory.iterdir():
        shutil.copy(f, pki / f.name)
    row = AuditRow("H41", 1, 0.0, "witness", "doc-1", "00" * 32, "{}", "", "")
    bundle = export_bundle(Trail("doc-1", [row]), [], pki, Topology.load(ROOT / "config" / "topology.yaml"),
                           tmp_path / "bundle")
    shipped = {f.name for f in (bundle / "trust").iterdir()}
    assert {"RootCA-G2.cer", "RootCA-G2.crl", "CA-G2.der", "CA-G2.crl", "RootCA-G1.crl"} <= shipped
    _, intermediates, crls = read_directory(bundle / "trust")
    assert [c.subject for c in intermediates] == [gov.ca.cert.subject]
    assert {c.issuer for c in crls} >= {gov.g2.cert.subject, gov.ca.cert.subject}


# --- SHA-1: only where the directory says so ------------------------------------------------------


def test_sha1_chain_refused_by_default(gov: govpki.GovPki, directory: Topology) -> None:
    """A G1 certificate signed with SHA-1, for an agency without the policy: CERT_ALGORITHM, even
    though the document's own signature is RSA-SHA256."""
    data = _signed(gov.agency(STRICT, issuer="g1", sha1=True), STRICT)
    with pytest.raises(errors.CertAlgorithm) as info:
        check(data, trust=TrustStore.load(gov.directory), topology=directory)
    assert info.value.code == "CERT_ALGORITHM" and "SHA-1" in info.value.message
    with pytest.raises(errors.CertAlgorithm):  # and without a directory at all (no sender known)
        check(data, trust=TrustStore.load(gov.directory))


def test_sha1_chain_accepted_for_the_legacy_agency(gov: govpki.GovPki, directory: Topology) -> None:
    """The same kind of certificate for G22, whose entry sets legacy_sha1: accepted, and the
    result names the SHA-1-signed certificate."""
    agency = gov.agency(LEGACY, issuer="g1", sha1=True)
    checked = check(_signed(agency, LEGACY), trust=TrustStore.load(gov.directory), topology=directory)
    assert checked.signature.chain.path[-1].subject == gov.g1.cert.subject
    assert len(checked.legacy) == 1 and "SHA-1" in checked.legacy[0] and LEGACY in checked.legacy[0]
    assert summary(checked)["legacy_sha1"] == list(checked.legacy)


def test_sha1_signature_only_for_the_legacy_agency(gov: govpki.GovPki, directory: Topology) -> None:
    """An RSA-SHA1 signature over a SHA-1 digest (an old USB token), chain SHA-256: accepted from
    G22 with both named in the result; from G17 refused SIG_ALGORITHM."""
    store = TrustStore.load(gov.directory)
    checked = check(_signed(gov.agency(LEGACY), LEGACY, sha1=True), trust=store, topology=directory)
    assert checked.legacy == ("signature method http://www.w3.org/2000/09/xmldsig#rsa-sha1",
                              "digest method http://www.w3.org/2000/09/xmldsig#sha1")
    with pytest.raises(errors.WeakAlgorithm) as info:
        check(_signed(gov.agency(STRICT), STRICT, sha1=True), trust=store, topology=directory)
    assert info.value.code == "SIG_ALGORITHM"


def test_the_anchors_own_sha1_signature_does_not_count(gov: govpki.GovPki, directory: Topology) -> None:
    """The G1 root signs itself with SHA-1; a certificate it signed with SHA-256 is accepted for an
    agency without the policy, with nothing legacy."""
    checked = check(_signed(gov.agency(STRICT, issuer="g1"), STRICT), trust=TrustStore.load(gov.directory),
                    topology=directory)
    assert checked.signature.chain.path[-1].subject == gov.g1.cert.subject and checked.legacy == ()


def test_the_path_cache_keeps_the_policies_apart(gov: govpki.GovPki) -> None:
    """One store, one SHA-1 certificate: an answer given with SHA-1 allowed never serves a caller
    that does not allow it, and a refusal never blocks one that does, in either order."""
    store = TrustStore.load(gov.directory)
    leaf = gov.agency(LEGACY, issuer="g1", sha1=True).cert
    assert store.validate(leaf, allow_sha1=True).legacy
    with pytest.raises(errors.CertAlgorithm):
        store.validate(leaf)
    other = gov.agency(LEGACY, issuer="g1", sha1=True).cert
    with pytest.raises(errors.CertAlgorithm):
        store.validate(other)
    assert store.validate(other, allow_sha1=True).legacy


def test_legacy_sha1_is_a_yes_or_no() -> None:
    """A directory entry whose legacy_sha1 is not a boolean is a CONFIG error naming the agency."""
    raw = _directory(legacy=())
    raw["agencies"][0]["legacy_sha1"] = "yes"
    with pytest.raises(errors.ConfigError) as info:
        Topology.from_dict(raw)
    assert "legacy_sha1" in info.value.message and raw["agencies"][0]["organ_id"] in info.value.message
    assert Topology.from_dict(_directory()).agency(LEGACY).legacy_sha1
    assert not Topology.from_dict(_directory()).agency(STRICT).legacy_sha1


def test_the_hop_carries_the_flag_and_refuses_the_others(gov: govpki.GovPki, directory: Topology,
                                                         dev_pki: Path) -> None:
    """At the national hub: G22's SHA-1 chain goes on with the outcome naming it (what the worker
    alerts on); G17's is rejected CERT_ALGORITHM, parked, and G17 told so in a signed receipt."""
    trust = TrustStore.load(gov.directory)
    hop = hops.hop(dev_pki, directory, "national", trust=trust)

    def judge(sender: str) -> Outcome:
        entry = wire.agency_exchange(sender)
        return hop.process(Inbound(_signed(gov.agency(sender, issuer="g1", sha1=True), sender),
                                   wire.trusted_headers(entry, {wire.H_KIND: "edxml"}), entry))

    accepted = judge(LEGACY)
    assert accepted.verdict == "forwarded" and accepted.legacy and "SHA-1" in accepted.legacy[0]
    assert [c.target for c in accepted.copies if c.headers.get(wire.H_KIND) == "edxml"] == [Target("hub", "H41")]
    refused = judge(STRICT)
    assert (refused.verdict, refused.code, refused.legacy) == ("rejected", "CERT_ALGORITHM", ())
    assert [c.target for c in refused.copies if c.target == PARKING] == [PARKING]
    told = [receipts.read_bytes(c.body) for c in refused.copies if c.target == Target("inbox", STRICT)]
    assert [(r.kind, r.code) for r in told] == [("rejected", "CERT_ALGORITHM")]


# --- on a real relay: the worker's alert and counter ----------------------------------------------


@pytest.mark.broker
def test_relay_alerts_when_it_accepts_sha1(rabbitmq_urls: tuple[str, str], tmp_path: Path,
                                          gov: govpki.GovPki) -> None:
    """On a real broker, a commune of Nghệ An marked legacy_sha1 sends a document signed under the
    G1 chain: it is delivered (and taken by the recipient), and hub H41 logs a sha1-accepted alert
    and counts it in lienthong_sha1_accepted_total.  A department without the policy sending the
    same kind is refused CERT_ALGORITHM in a signed rejection, and counted nowhere."""
    legacy, strict, recipient = "000.00.51.H41", "000.00.01.H41", "000.00.52.H41"
    relay = Relay(tmp_path / "relay", *rabbitmq_urls, agencies={legacy: {"legacy_sha1": True}})
    try:
        for name in ("RootCA-G1.crt", "RootCA-G1.crl"):  # the G1 generation joins the hubs' trust store
            shutil.copy(gov.directory / name, relay.settings.pki / name)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        relay.stop_workers("H41")
        relay.start_worker("H41", "--metrics-port", str(port))

        def document(sender: str) -> bytes:
            issued = gov.agency(sender, issuer="g1", sha1=True)
            doc = build_document(Organ(sender, "xã"), [Organ(recipient, "xã Nam Đàn")], subject="SHA-1",
                                 attachments=[("a.pdf", "application/pdf", os.urandom(1000))])
            return sign(doc, SigningKey(issued.key, issued.cert))

        good = document(legacy)
        relay.client(legacy).send(good)
        assert [i.body for i in relay.take(recipient, 1, accept=lambda i: i.body == good)] == [good]
        bad = document(strict)
        client = relay.client(strict)
        got = client.follow(client.send(bad), kinds=("rejected",))
        assert got["rejected"].code == "CERT_ALGORITHM"
        alerts = [e for e in map(_json, relay.log_text().splitlines())
                  if e.get("event") == "alert" and e.get("kind") == "sha1-accepted"]
        assert [(e["hub"], e["agency"]) for e in alerts] == [("H41", legacy)]
        assert "SHA-1" in alerts[0]["detail"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert f'lienthong_sha1_accepted_total{{agency="{legacy}",hub="H41"}} 1.0' in text
        assert strict not in "".join(line for line in text.splitlines() if "sha1_accepted" in line)
    finally:
        relay.close()


def _json(line: str) -> dict[str, str]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
