"""Interop with Debian's xmlsec1, an independent XMLDSig implementation, both ways."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from lxml import etree

from broker.core import errors, receipts
from broker.core.algorithms import EXC_C14N
from broker.core.canon import canonicalize
from broker.core.signer import SigningKey, sign, sign_tree
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.relay import devpki
from tests.xmlsec import DS, G22, H41, agency_key, document, xmlsec_sign, xmlsec_verify

pytestmark = pytest.mark.interop

@pytest.fixture(scope="module", autouse=True)
def xmlsec1() -> str:
    path = shutil.which("xmlsec1")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("xmlsec1 is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("xmlsec1 is not installed")
    return path


def flip_subject(data: bytes) -> bytes:
    return data.replace("Liên thông xmlsec1".encode(), "Liên thông xmlsec2".encode())


def flip_attachment(data: bytes) -> bytes:
    i = data.index(b"ContentTransferEncoded>") + 60
    return data[:i] + (b"A" if data[i:i + 1] != b"A" else b"B") + data[i + 1:]


def test_xmlsec1_accepts_what_lienthong_signs_rsa(dev_pki: Path, tmp_path: Path) -> None:
    """An RSA-SHA256 enveloped signature made by lienthong verifies with xmlsec1 against the dev root."""
    result = xmlsec_verify(dev_pki, sign(document(), agency_key(dev_pki)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


def test_xmlsec1_accepts_what_lienthong_signs_ecdsa(dev_pki: Path, tmp_path: Path) -> None:
    """The same with an ECDSA P-256 agency key (signature value as r||s, per XMLDSig)."""
    ec = devpki.issue(devpki.load_root(dev_pki), "agency with EC key", uid=G22, kind="ec")
    result = xmlsec_verify(dev_pki, sign(document(), SigningKey(ec.key, ec.cert)), tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("method", ["rsa-sha256", "ecdsa-sha256"])
def test_lienthong_accepts_what_xmlsec1_signs(dev_pki: Path, topology: Topology, tmp_path: Path,
                                               method: str) -> None:
    """A document signed by xmlsec1 with a trusted agency key passes every lienthong check, signer bound."""
    if method.startswith("ecdsa"):
        ec = devpki.issue(devpki.load_root(dev_pki), "agency with EC key", uid=G22, kind="ec")
        key_pem, cert_pem = tmp_path / "ec.key", tmp_path / "ec.pem"
        key_pem.write_bytes(devpki.pem_key(ec.key))
        cert_pem.write_bytes(devpki.pem_cert(ec.cert))
    else:
        key_pem, cert_pem = dev_pki / "agencies" / G22 / "key.pem", dev_pki / "agencies" / G22 / "cert.pem"
    signed = xmlsec_sign(key_pem, cert_pem, document(), tmp_path, method)
    checked = check(signed, trust=TrustStore.load(dev_pki), topology=topology)
    assert checked.signature is not None
    assert checked.sender is not None and checked.sender.organ_id == G22


@pytest.mark.parametrize("tamper", [flip_subject, flip_attachment], ids=["subject", "attachment"])
@pytest.mark.parametrize("signer", ["lienthong", "xmlsec1"])
def test_tampering_caught_by_both(dev_pki: Path, topology: Topology, tmp_path: Path, tamper, signer: str) -> None:  # type: ignore[no-untyped-def]
    """One changed character in the header or in the attachment: xmlsec1 fails and lienthong says SIG_DIGEST,
    whichever of the two signed."""
    if signer == "lienthong":
        signed = sign(document(), agency_key(dev_pki))
    else:
        signed = xmlsec_sign(dev_pki / "agencies" / G22 / "key.pem", dev_pki / "agencies" / G22 / "cert.pem",
                             document(), tmp_path)
    bad = tamper(signed)
    assert bad != signed
    assert xmlsec_verify(dev_pki, signed, tmp_path).returncode == 0
    assert xmlsec_verify(dev_pki, bad, tmp_path).returncode != 0
    with pytest.raises(errors.DigestMismatch):
        check(bad, trust=TrustStore.load(dev_pki), topology=topology)


def test_signer_binding_is_lienthongs_own_check(dev_pki: Path, topology: Topology, tmp_path: Path) -> None:
    """xmlsec1 signs a document claiming From G22 with H41's trusted key: xmlsec1 (which knows no agency
    directory) accepts it; lienthong refuses it with SIGNER_MISMATCH."""
    signed = xmlsec_sign(dev_pki / "agencies" / H41 / "key.pem", dev_pki / "agencies" / H41 / "cert.pem",
                         document(sender=G22), tmp_path)
    assert xmlsec_verify(dev_pki, signed, tmp_path).returncode == 0
    with pytest.raises(errors.SignerMismatch):
        check(signed, trust=TrustStore.load(dev_pki), topology=topology)


def _receipt_as_a_tree(receipt: receipts.Receipt, key: SigningKey) -> bytes:
    """The same receipt built as a tree and signed by the general signer: the reference for
    :func:`receipts.build`, which writes it as text."""
    root = etree.Element(receipts.R + "Receipt", nsmap={"lt": receipts.RECEIPT_NS})
    root.set("version", "1")
    values = {"Kind": receipt.kind, "Hub": receipt.hub, "Time": receipt.time, "DocumentId": receipt.document_id,
              "DocumentSha256": receipt.document_sha256, "From": receipt.sender, "Code": receipt.code,
              "Reason": receipt.reason}
    for name in receipts.FIELDS:
        for value in (receipt.recipients if name == "To" else (values[name],)):
            etree.SubElement(root, receipts.R + name).text = value
    tree = etree.ElementTree(root)
    sign_tree(tree, key, parent=root)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def _unsigned(data: bytes) -> bytes:
    """The exclusive canonical form of a receipt with its signature value left out."""
    root = etree.fromstring(data)
    root.find(f"{{{DS}}}Signature/{{{DS}}}SignatureValue").text = ""
    return canonicalize(etree.ElementTree(root), EXC_C14N)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_receipts_written_as_text_are_what_the_signer_writes_and_verify(dev_pki: Path, tmp_path: Path,
                                                                        kind: str) -> None:
    """A receipt with every character that needs escaping (and one that only the canonical form
    escapes, ``\\r``), Vietnamese text, empty fields and two recipients: xmlsec1 and lienthong
    verify it, it reads back as written, and it is the tree the general signer makes, but for the
    signature value (ECDSA's differs every time)."""
    hub = devpki.issue(devpki.load_root(dev_pki), "hub for receipts", uid="hub:H41", kind=kind)
    key = SigningKey(hub.key, hub.cert)
    for receipt in (
        receipts.Receipt(kind="rejected", hub="H41", time="2026-12-06T01:02:03.000004Z",
                         document_id='a&b<c>d"e\'f', document_sha256="ab" * 32, sender=G22, recipients=(H41, G22),
                         code="SIG_DIGEST", reason="Văn bản bị sửa\r\nsau khi ký:\t<x> & ]]>"),
        receipts.Receipt(kind="accepted", hub="H41", time="2026-12-06T01:02:03.000004Z", document_id="DOC-1",
                         document_sha256="cd" * 32, sender=G22),
    ):
        written = receipts.build(receipt, key)
        assert _unsigned(written) == _unsigned(_receipt_as_a_tree(receipt, key))
        assert receipts.verify(written, TrustStore.load(dev_pki)).receipt == receipt
        result = xmlsec_verify(dev_pki, written, tmp_path)
        assert result.returncode == 0, result.stderr
    with pytest.raises(ValueError, match="XML compatible"):
        receipts.build(receipts.Receipt(kind="accepted", hub="H41", time="", document_id="x\x01",
                                        document_sha256="", sender=G22), key)
