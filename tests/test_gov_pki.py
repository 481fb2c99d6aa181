"""The government CA's own material: a trust store is read from the files the CA publishes (its
RSA-4096 G2 root and CRLs in DER, others in PEM, whatever their names say); a file that is
neither is named in the error."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from broker.core import errors
from broker.core.algorithms import DIGESTS, DS, SIGNATURE_METHODS
from broker.core.edxml import Organ, build_document
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign, sign_tree, sign_value
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.relay import devpki
from tests import govpki
from tests.relay import ROOT

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
    a document: the full hub check accepts it, and the path ends at G2."""
    agency = gov.agency(STRICT)
    checked = check(_signed(agency, STRICT), trust=TrustStore.load(gov.directory), topology=directory)
    assert [c.subject for c in checked.signature.chain.path] == [agency.cert.subject, gov.ca.cert.subject,
                                                                 gov.g2.cert.subject]


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
    store = TrustStore.load(trust)
    data = _signed(gov.agency(STRICT), STRICT)
    check(data, trust=store, topology=directory)
    (trust / "RootCA-G2.crl").write_bytes(
        devpki.make_crl(gov.g2, [gov.ca.cert.serial_number]).public_bytes(Encoding.DER))
    assert store.refresh(every=0)
    with pytest.raises(errors.Revoked):
        check(data, trust=store, topology=directory)
    (trust / "new-root.cer").write_bytes(devpki.make_root("another root").cert.public_bytes(Encoding.DER))
    (trust / "half-written.crl").write_bytes(b"\x30\x82\x01")
    assert not store.refresh(every=0)
    assert len(store.anchors) == 3  # G2, G1, dev root: not the new one, nothing lost
