"""Evidence an auditor can trust (what is read is what was signed): the attacks of the evidence
review, each of which must now fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from broker.core import receipts
from broker.core.edxml import E, Organ, ResponseFor, build_document, build_status, read
from broker.core.hoprecords import utc_now
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign_tree
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.settings import PkiLayout

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
