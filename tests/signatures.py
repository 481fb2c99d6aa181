"""The signature attack corpus: a signed document built with the dev PKI, then altered the way an
attacker would, one case per attack, each with the error code it must get.  Used by
tests/test_signatures.py (lienthong's verdicts, and signxml's) and tests/hostile.py (the same
attacks through every way in)."""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from lxml import etree

from broker.core.algorithms import DS, SIGNATURE_METHODS
from broker.core.edxml import E, Organ, build_document
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign_tree, sign_value
from broker.relay import devpki

SENDER = "000.00.00.G22"
RECIPIENT = "000.00.00.H41"



def agency_key(dev_pki: Path, organ_id: str = SENDER) -> SigningKey:
    d = dev_pki / "agencies" / organ_id
    return SigningKey.load(d / "key.pem", d / "cert.pem")


def unsigned(sender: str = SENDER, size: int = 6000) -> bytes:
    return build_document(Organ(sender, "sender"), [Organ(RECIPIENT, "recipient")], subject="Thử nghiệm ký số",
                          attachments=[("cv.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * size)])


def signed(key: SigningKey, data: bytes | None = None) -> bytes:
    tree = parse(data or unsigned())
    sign_tree(tree, key)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def edit(data: bytes, change: Callable[[etree._Element], None]) -> bytes:
    tree = parse(data)
    change(tree.getroot())
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def sig_of(root: etree._Element) -> etree._Element:
    return next(root.iter(DS + "Signature"))


def resign_signed_info(root: etree._Element, key: SigningKey) -> None:
    """Recompute the SignatureValue after editing SignedInfo (attacker holding a valid key)."""
    sig = sig_of(root)
    si = sig.find(DS + "SignedInfo")
    method = SIGNATURE_METHODS[si.find(DS + "SignatureMethod").get("Algorithm")]
    value = sign_value(key.key, method, etree.tostring(si, method="c14n", exclusive=True))
    sig.find(DS + "SignatureValue").text = base64.b64encode(value).decode()


# --- the corpus: (id, builder(dev_pki, root) -> bytes, expected error code or None) ---------------


def _good(pki: Path, root: devpki.Issued) -> bytes:
    return signed(agency_key(pki))


def _good_ecdsa(pki: Path, root: devpki.Issued) -> bytes:
    ec = devpki.issue(root, "agency with ECDSA key", uid=SENDER, kind="ec")
    return signed(SigningKey(ec.key, ec.cert))


def _tampered_subject(pki: Path, root: devpki.Issued) -> bytes:
    return signed(agency_key(pki)).replace("Thử nghiệm ký số".encode(), "Thử nghiệm ký sô".encode())


def _tampered_attachment(pki: Path, root: devpki.Issued) -> bytes:
    good = signed(agency_key(pki))
    i = good.index(b"ContentTransferEncoded>") + 40
    return good[:i] + (b"A" if good[i:i + 1] != b"A" else b"B") + good[i + 1:]


def _tampered_from(pki: Path, root: devpki.Issued) -> bytes:
    return signed(agency_key(pki)).replace(SENDER.encode(), b"000.00.00.G17", 1)


def _added_recipient(pki: Path, root: devpki.Issued) -> bytes:
    def add(r: etree._Element) -> None:
        mh = r.find(f"{E}edXMLEnvelope/{E}edXMLHeader/{E}MessageHeader")
        to = copy.deepcopy(mh.find(E + "To"))
        to.find(E + "OrganId").text = "000.00.00.H14"
        mh.find(E + "To").addnext(to)
    return edit(signed(agency_key(pki)), add)


def _wrong_key(pki: Path, root: devpki.Issued) -> bytes:
    # signed by G22's key, but KeyInfo carries H41's certificate
    def swap(r: etree._Element) -> None:
        other = x509.load_pem_x509_certificate((pki / "agencies" / RECIPIENT / "cert.pem").read_bytes())
        from cryptography.hazmat.primitives.serialization import Encoding
        sig_of(r).find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate").text = \
            base64.b64encode(other.public_bytes(Encoding.DER)).decode()
    return edit(signed(agency_key(pki)), swap)


def _untrusted(pki: Path, root: devpki.Issued) -> bytes:
    rogue_root = devpki.make_root("rogue root")
    rogue = devpki.issue(rogue_root, "rogue", uid=SENDER)
    return signed(SigningKey(rogue.key, rogue.cert))


def _self_signed_leaf(pki: Path, root: devpki.Issued) -> bytes:
    rogue_root = devpki.make_root("self-signed agency")
    # a CA cert used directly as the signer: not in the anchors
    return signed(SigningKey(rogue_root.key, rogue_root.cert))


def _expired(pki: Path, root: devpki.Issued) -> bytes:
    old = devpki.issue(root, "expired agency", uid=SENDER,
                       not_before=datetime.now(UTC) - timedelta(days=40), days=10)
    return signed(SigningKey(old.key, old.cert))


def _not_yet_valid(pki: Path, root: devpki.Issued) -> bytes:
    future = devpki.issue(root, "future agency", uid=SENDER,
                          not_before=datetime.now(UTC) + timedelta(days=2), days=10)
    return signed(SigningKey(future.key, future.cert))


def _revoked(pki: Path, root: devpki.Issued) -> bytes:
    return signed(agency_key(pki, "000.00.00.G17"))  # the fixture revokes G17's certificate


def _wrong_usage(pki: Path, root: devpki.Issued) -> bytes:
    enc = devpki.issue(root, "encryption only", uid=SENDER, can_sign=False)
    return signed(SigningKey(enc.key, enc.cert))


def _signer_not_from(pki: Path, root: devpki.Issued) -> bytes:
    # a valid, trusted agency (H41) signs a document claiming to be from G22
    return signed(agency_key(pki, RECIPIENT))


def _unknown_sender(pki: Path, root: devpki.Issued) -> bytes:
    stranger = devpki.issue(root, "not in the directory", uid="999.99.99.H99")
    return signed(SigningKey(stranger.key, stranger.cert), unsigned(sender="999.99.99.H99"))


def _sha1(pki: Path, root: devpki.Issued) -> bytes:
    from broker.core.algorithms import DIGESTS
    key = agency_key(pki)
    tree = parse(unsigned())
    sign_tree(tree, key, digest=DIGESTS["http://www.w3.org/2000/09/xmldsig#sha1"])
    r = tree.getroot()
    sig_of(r).find(f"{DS}SignedInfo/{DS}SignatureMethod").set(
        "Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    resign_signed_info(r, key)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def _unsigned(pki: Path, root: devpki.Issued) -> bytes:
    return unsigned()


def legacy_slot(r: etree._Element) -> etree._Element:
    """The samples' placeholder ``edXML:Signature``: the schema lets anything sit inside it."""
    slot = etree.Element(E + "Signature")
    sig_of(r).addprevious(slot)
    return slot


def _two_signatures(pki: Path, root: devpki.Issued) -> bytes:
    def dup(r: etree._Element) -> None:
        legacy_slot(r).append(copy.deepcopy(sig_of(r)))
    return edit(signed(agency_key(pki)), dup)


def _moved_signature(pki: Path, root: devpki.Issued) -> bytes:
    def move(r: etree._Element) -> None:
        legacy_slot(r).append(sig_of(r))
    return edit(signed(agency_key(pki)), move)


def _signature_in_body(pki: Path, root: devpki.Issued) -> bytes:
    def move(r: etree._Element) -> None:
        r.find(f"{E}edXMLEnvelope/{E}edXMLBody").append(sig_of(r))
    return edit(signed(agency_key(pki)), move)


def _wrapping_object(pki: Path, root: devpki.Issued) -> bytes:
    """Classic XSW: the signed header hidden in an Object, a forged header in its place."""
    def wrap(r: etree._Element) -> None:
        mh = r.find(f"{E}edXMLEnvelope/{E}edXMLHeader/{E}MessageHeader")
        obj = etree.SubElement(sig_of(r), DS + "Object")
        obj.append(copy.deepcopy(mh))
        mh.find(f"{E}Subject").text = "forged subject"
    return edit(signed(agency_key(pki)), wrap)


def _reference_to_subtree(pki: Path, root: devpki.Issued) -> bytes:
    """The reference points at one element only; the rest (From, To) would be unsigned."""
    key = agency_key(pki)

    def narrow(r: etree._Element) -> None:
        body = r.find(f"{E}edXMLEnvelope/{E}edXMLBody")
        ref = sig_of(r).find(f"{DS}SignedInfo/{DS}Reference")
        ref.set("URI", "#body")
        ref.find(DS + "DigestValue").text = base64.b64encode(hashlib.sha256(
            etree.tostring(body, method="c14n", exclusive=True)).digest()).decode()
        resign_signed_info(r, key)
    return edit(signed(key), narrow)


def _extra_reference(pki: Path, root: devpki.Issued) -> bytes:
    key = agency_key(pki)

    def extra(r: etree._Element) -> None:
        si = sig_of(r).find(DS + "SignedInfo")
        si.append(copy.deepcopy(si.find(DS + "Reference")))
        resign_signed_info(r, key)
    return edit(signed(key), extra)


def _xpath_transform(pki: Path, root: devpki.Issued) -> bytes:
    key = agency_key(pki)

    def xpath(r: etree._Element) -> None:
        t = sig_of(r).find(f"{DS}SignedInfo/{DS}Reference/{DS}Transforms")
        x = etree.SubElement(t, DS + "Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
        etree.SubElement(x, DS + "XPath").text = "not(ancestor-or-self::*[local-name()='Subject'])"
        resign_signed_info(r, key)
    return edit(signed(key), xpath)


def _bad_signature_value(pki: Path, root: devpki.Issued) -> bytes:
    def flip(r: etree._Element) -> None:
        sv = sig_of(r).find(DS + "SignatureValue")
        raw = bytearray(base64.b64decode(sv.text))
        raw[10] ^= 0xFF
        sv.text = base64.b64encode(bytes(raw)).decode()
    return edit(signed(agency_key(pki)), flip)


def _tampered_signed_info(pki: Path, root: devpki.Issued) -> bytes:
    """SignedInfo changed (digest replaced to match edited content) without re-signing."""
    def change(r: etree._Element) -> None:
        r.find(f"{E}edXMLEnvelope/{E}edXMLHeader/{E}MessageHeader/{E}Subject").text = "edited"
        sig = sig_of(r)
        dv = sig.find(f"{DS}SignedInfo/{DS}Reference/{DS}DigestValue")
        parent = sig.getparent()
        parent.remove(sig)
        dv.text = base64.b64encode(hashlib.sha256(
            etree.tostring(r.getroottree(), method="c14n", exclusive=True)).digest()).decode()
        parent.append(sig)
    return edit(signed(agency_key(pki)), change)


def _comment_added(pki: Path, root: devpki.Issued) -> bytes:
    """Comments are outside the signed node-set of URI="" (XMLDSig 4.4.3.3): still valid."""
    return signed(agency_key(pki)).replace(b"<edXML:Subject>", b"<!-- note --><edXML:Subject>", 1)


def _comments_in_signature(pki: Path, root: devpki.Issued) -> bytes:
    """Comments inside the Signature, one between the two Transforms: the canonical SignedInfo
    leaves them out, so the signature still verifies, and the second Transform is still the one
    read as the reference's canonicalization."""
    def annotate(r: etree._Element) -> None:
        for el in (sig_of(r), sig_of(r).find(f"{DS}SignedInfo"),
                   sig_of(r).find(f"{DS}SignedInfo/{DS}Reference/{DS}Transforms")):
            el.insert(1, etree.Comment(" note "))
    return edit(signed(agency_key(pki)), annotate)


CASES: list[tuple[str, Callable[[Path, devpki.Issued], bytes], str | None]] = [
    ("good-rsa", _good, None),
    ("good-ecdsa", _good_ecdsa, None),
    ("comment-added", _comment_added, None),
    ("comments-in-signature", _comments_in_signature, None),
    ("unsigned", _unsigned, "SIG_MISSING"),
    ("tampered-subject", _tampered_subject, "SIG_DIGEST"),
    ("tampered-attachment", _tampered_attachment, "SIG_DIGEST"),
    ("tampered-from", _tampered_from, "SIG_DIGEST"),
    ("added-recipient", _added_recipient, "SIG_DIGEST"),
    ("tampered-signed-info", _tampered_signed_info, "SIG_INVALID"),
    ("bad-signature-value", _bad_signature_value, "SIG_INVALID"),
    ("wrong-key", _wrong_key, "SIG_INVALID"),
    ("untrusted", _untrusted, "CERT_UNTRUSTED"),
    ("self-signed-leaf", _self_signed_leaf, "CERT_UNTRUSTED"),
    ("expired", _expired, "CERT_EXPIRED"),
    ("not-yet-valid", _not_yet_valid, "CERT_EXPIRED"),
    ("revoked", _revoked, "CERT_REVOKED"),
    ("wrong-key-usage", _wrong_usage, "CERT_USAGE"),
    ("signer-not-from", _signer_not_from, "SIGNER_MISMATCH"),
    ("unknown-sender", _unknown_sender, "AGENCY_UNKNOWN"),
    ("sha1", _sha1, "SIG_ALGORITHM"),
    ("two-signatures", _two_signatures, "SIG_PROFILE"),
    ("moved-signature", _moved_signature, "SIG_PROFILE"),
    ("signature-in-body", _signature_in_body, "EDXML_SCHEMA"),  # the schema is the first line
    ("wrapping-object", _wrapping_object, "SIG_PROFILE"),
    ("reference-to-subtree", _reference_to_subtree, "SIG_PROFILE"),
    ("extra-reference", _extra_reference, "SIG_PROFILE"),
    ("xpath-transform", _xpath_transform, "SIG_PROFILE"),
]
