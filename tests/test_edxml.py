"""The edXML model and schemas over the national axis samples, and what the schema cannot say."""

from __future__ import annotations

import base64
import binascii
import copy
import random
from pathlib import Path

import pytest
from lxml import etree

from broker.core import errors, schema
from broker.core.edxml import Business, E, Organ, ResponseFor, build_document, build_status, is_base64, read
from broker.core.parsing import parse
from tests.samples import MALFORMED, digest, pinned, sample, sample_names, samples_dir

STATUS_OF = {"status_inbox_01.edxml": "01", "status_rejection_02.edxml": "02", "status_acceptance_03.edxml": "03",
             "status_assignment_04.edxml": "04", "status_processing_05.edxml": "05",
             "status_finish_06.edxml": "06", "status_cancellation_13.edxml": "13",
             "status_change-acceptance_15.edxml": "15", "status_change-rejection_16.edxml": "16"}


@pytest.mark.parametrize("name", sample_names())
def test_every_well_formed_sample_validates_and_reads(name: str) -> None:
    """Each well-formed sample of the axis kit passes the schema and reads into the model."""
    tree = parse(sample(name))
    kind = schema.validate(tree.getroot())
    message = read(tree)
    assert message.kind == kind == ("status" if name.startswith("status") else "document")
    assert message.sender.organ_id
    assert message.recipients and message.document_id
    if name in STATUS_OF:
        assert message.status_code == STATUS_OF[name]
        # a status goes to the agency ResponseFor names (the document's sender; for 13, its recipient)
        assert message.response_for is not None
        assert message.recipient_ids == (message.response_for.organ_id,) != (message.sender.organ_id,)


def _read_by_xpath(root: etree._Element) -> dict[str, object]:
    """The fields :func:`read` takes, read again by XPath string-values: a reference with the
    path semantics of the spec, for the reader's own walk over the children to be held to."""
    ns = {"e": E[1:-1]}
    mh = "e:edXMLEnvelope/e:edXMLHeader/e:MessageHeader/"

    def text(path: str, at: etree._Element = root) -> str:
        return str(at.xpath(f"string({path})", namespaces=ns)).strip()

    fields: dict[str, object] = {
        "sender": text(mh + "e:From/e:OrganId"), "status": text(mh + "e:StatusCode"),
        "business": text("e:edXMLEnvelope/e:edXMLHeader/e:TraceHeaderList/e:Bussiness/e:BussinessDocType")}
    if fields["status"]:
        fields["about"] = (text(mh + "e:ResponseFor/e:OrganId"), text(mh + "e:ResponseFor/e:DocumentId"))
        return fields
    fields["to"] = tuple(text("e:OrganId", to) for to in root.xpath(mh + "e:To", namespaces=ns))
    code = (text(mh + "e:Code/e:CodeNumber"), text(mh + "e:Code/e:CodeNotation"))
    fields["document"] = (text(mh + "e:DocumentId"), text(mh + "e:Subject"), "/".join(x for x in code if x))
    fields["attachments"] = tuple(
        text("e:ContentId", r) for r in root.xpath("e:edXMLEnvelope/e:edXMLBody/e:edXMLManifest/e:Reference",
                                                    namespaces=ns))
    return fields


def _read_fields(root: etree._Element) -> dict[str, object]:
    m = read(root)
    fields: dict[str, object] = {"sender": m.sender.organ_id, "status": m.status_code or "",
                                 "business": m.business.doc_type if m.business else ""}
    if m.status_code:
        assert m.response_for is not None
        fields["about"] = (m.response_for.organ_id, m.response_for.document_id)
        return fields
    fields["to"] = m.recipient_ids
    fields["document"] = (m.document_id, m.subject, m.code)
    fields["attachments"] = tuple(a.content_id for a in m.attachments)
    return fields


@pytest.mark.parametrize("name", sample_names())
def test_the_reader_reads_what_xpath_reads_comments_or_not(name: str) -> None:
    """Every sample reads as XPath reads it, also with a comment at the start and end of every
    element of the header (the signature does not cover comments: anyone on the path may add them)."""
    root = parse(sample(name)).getroot()
    assert _read_fields(root) == _read_by_xpath(root)
    for el in list(root.iter(E + "edXMLHeader"))[0].iter():
        if isinstance(el.tag, str):
            el.insert(0, etree.Comment("c"))
            el.append(etree.Comment("c"))
    assert _read_fields(root) == _read_by_xpath(root)


def test_samples_travel_with_the_repository() -> None:
    """The samples are the repository's own copy, byte for byte as pinned (CRLF line ends and all):
    a clone passes its tests with nothing beside it."""
    root = samples_dir().resolve()
    assert root.is_relative_to(Path(__file__).resolve().parent)
    names = sorted(p.name for p in root.glob("*.edxml"))
    assert len(names) == 18 and names == sorted(pinned())
    for name in names:
        assert digest(name) == pinned()[name], f"{name} differs from the pinned copy"
    assert b"\r\n" in sample("status.edxml")


def test_samples_cover_both_malformed_cases() -> None:
    """The kit's two malformed samples are excluded from the well-formed list, and really malformed."""
    assert len(sample_names()) + len(MALFORMED) == len(sample_names(well_formed=False)) + len(sample_names())
    for name in MALFORMED:
        assert name not in sample_names()
        with pytest.raises(errors.MalformedXML):
            parse(sample(name))


def test_business_types_of_samples() -> None:
    """Update, revocation and replacement samples carry BussinessDocType 2, 1 and 3."""
    for name, doc_type, meaning in (("edoc_update.edxml", "2", "update"), ("edoc_revocation.edxml", "1", "revocation"),
                                    ("edoc_replacement.edxml", "3", "replacement")):
        message = read(parse(sample(name)))
        assert message.business is not None
        assert (message.business.doc_type, message.business.meaning) == (doc_type, meaning)


def test_attachments_linked_by_content_id() -> None:
    """A sample's attachment is reachable through its manifest ContentId and decodes (a ZIP)."""
    message = read(parse(sample("edoc_update.edxml")))
    (attachment,) = message.attachments
    assert attachment.content_id == "cid:209"
    assert attachment.content()[:2] == b"PK"


def test_multiple_recipients_read_in_order() -> None:
    """A document to three agencies lists them in document order."""
    message = read(parse(sample("edoc_update.edxml")))
    assert message.recipient_ids == ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")


def _edit(name: str, change) -> etree._ElementTree:  # type: ignore[no-untyped-def]
    tree = parse(sample(name))
    change(tree.getroot())
    return tree


def _mh(root: etree._Element) -> etree._Element:
    return root.find(f"{E}edXMLEnvelope/{E}edXMLHeader/{E}MessageHeader")


@pytest.mark.parametrize(("change", "needle"), [
    (lambda r: setattr(_mh(r).find(f"{E}PromulgationInfo/{E}PromulgationDate"), "text", "2018-09-28"),
     "PromulgationDate"),
    (lambda r: setattr(_mh(r).find(f"{E}From/{E}OrganId"), "text", ""), "OrganId"),
    (lambda r: setattr(_mh(r).find(f"{E}From/{E}OrganId"), "text", "000.00 00.G22"), "OrganId"),
    (lambda r: etree.SubElement(_mh(r), E + "Unexpected"), "Unexpected"),
    (lambda r: setattr(_mh(r).find(f"{E}DocumentId"), "text", " padded "), "DocumentId"),
])
def test_schema_rejects_document_errors(change, needle: str) -> None:  # type: ignore[no-untyped-def]
    """Wrong dates, empty or spaced agency codes, unknown elements: EDXML_SCHEMA naming the element."""
    tree = _edit("edoc_update.edxml", change)
    with pytest.raises(errors.SchemaViolation) as info:
        schema.validate(tree.getroot())
    assert needle in info.value.message


def test_schema_rejects_unknown_status_code() -> None:
    """Status code 07 does not exist in QCVN 102."""
    tree = _edit("status_finish_06.edxml", lambda r: setattr(_mh(r).find(f"{E}StatusCode"), "text", "07"))
    with pytest.raises(errors.SchemaViolation) as info:
        schema.validate(tree.getroot())
    assert "StatusCode" in info.value.message


def test_wrong_namespace() -> None:
    """A root outside the QCVN 102 namespace is EDXML_NAMESPACE, before any schema work."""
    with pytest.raises(errors.WrongNamespace):
        schema.validate(parse(b'<edXML xmlns="urn:other"/>').getroot())


@pytest.mark.parametrize(("change", "error"), [
    (lambda r: _mh(r).append(copy.deepcopy(_mh(r).find(E + "From"))), errors.SchemaViolation),
    (lambda r: [_mh(r).remove(t) for t in _mh(r).findall(E + "To")], errors.SchemaViolation),
    (lambda r: _mh(r).append(copy.deepcopy(_mh(r).find(E + "To"))), errors.SchemaViolation),
    (lambda r: _mh(r).remove(_mh(r).find(E + "DocumentId")), errors.SchemaViolation),
])
def test_model_cardinality(change, error) -> None:  # type: ignore[no-untyped-def]
    """Two From, no To, a To listed twice, no DocumentId: refused by the model."""
    with pytest.raises(error):
        read(_edit("edoc_update.edxml", change))


def test_manifest_mismatch() -> None:
    """An attachment without a manifest reference, a reference without attachment, bad base64."""
    def drop_reference(r: etree._Element) -> None:
        ref = r.find(f"{E}edXMLEnvelope/{E}edXMLBody/{E}edXMLManifest/{E}Reference")
        ref.getparent().remove(ref)

    def drop_attachment(r: etree._Element) -> None:
        att = r.find(f"{E}AttachmentEncoded/{E}Attachment")
        att.getparent().remove(att)

    def corrupt(r: etree._Element) -> None:
        r.find(f"{E}AttachmentEncoded/{E}Attachment/{E}ContentTransferEncoded").text = "not base64 !!"

    for change, words in ((drop_reference, "not listed"), (drop_attachment, "no attachment"),
                          (corrupt, "base64")):
        with pytest.raises(errors.ManifestMismatch) as info:
            read(_edit("edoc_update.edxml", change))
        assert words in info.value.message


def _decodes(text: str) -> bool:
    """The rule attachments are held to: base64 once whitespace is removed, as the decoder reads it."""
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def test_attachment_base64_check_agrees_with_the_decoder() -> None:
    """The check that does not decode says what decoding says, on the edges and on noise."""
    quad = "QUJD"
    edges = [quad * (n // 4) + quad[: n % 4] + "=" * p for n in range(9) for p in range(4)]
    edges += ["", " ", "=", "==", "QUJD\n", "QU\nJD", "QU JD\t", "QQ==\n", "QQ=\n=", "Q=Q=", "QUJD=QUJD",
              "QUJD==\n==", "QQ==QQ==", "QUJD\x1c", "QUJD\u00a0", "QUJD\u2028", "Q\u00e9JD", "QUJ-", "QUJ_",
              "QUJD\x00", base64.encodebytes(bytes(range(256)) * 40).decode()]
    rng = random.Random(102)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    noise = [alphabet, alphabet + "=", alphabet + "= \n", alphabet + "=\n-_*\u00a0\x0b"]
    edges += ["".join(rng.choice(rng.choice(noise)) for _ in range(rng.randrange(0, 24))) for _ in range(20000)]
    edges += [base64.b64encode(rng.randbytes(rng.randrange(0, 40))).decode() for _ in range(2000)]
    assert sum(map(_decodes, edges)) > 2000  # both answers occur, many times
    for text in edges:
        assert is_base64(text) == _decodes(text), repr(text)


def test_attachment_base64_check_does_not_decode_usual_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Line-broken or one-line base64 with its padding is answered without the decoder."""
    def no_decoding(*_: object, **__: object) -> bytes:
        raise AssertionError("decoded")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    for size in (0, 1, 2, 3, 7000):
        data = random.Random(size).randbytes(size)
        assert is_base64(base64.encodebytes(data).decode())
        assert is_base64(base64.b64encode(data).decode())


def test_build_document_round_trip() -> None:
    """A built document validates and reads back what was put in, attachments byte for byte."""
    data = build_document(Organ("000.00.51.H41", "UBND xã"), [Organ("001.00.31.H14"), Organ("000.00.00.H14")],
                          subject="Về việc thử", document_id="doc-1",
                          attachments=[("a.pdf", "application/pdf", b"%PDF\x00\xff")],
                          business=Business("3", "doc-0", "thay thế"))
    tree = parse(data)
    assert schema.validate(tree.getroot()) == "document"
    m = read(tree)
    assert (m.sender.organ_id, m.recipient_ids, m.document_id, m.subject) == (
        "000.00.51.H41", ("001.00.31.H14", "000.00.00.H14"), "doc-1", "Về việc thử")
    assert m.attachments[0].content() == b"%PDF\x00\xff"
    assert m.business == Business("3", "doc-0", "thay thế")


def test_build_status_round_trip() -> None:
    """A built status validates and is addressed back to the document's sender."""
    data = build_status(Organ("001.00.31.H14"), ResponseFor("000.00.51.H41", "doc-1"), "03")
    tree = parse(data)
    assert schema.validate(tree.getroot()) == "status"
    m = read(tree)
    assert (m.kind, m.status_code, m.recipient_ids, m.document_id) == ("status", "03", ("000.00.51.H41",), "doc-1")
    with pytest.raises(errors.SchemaViolation):
        build_status(Organ("001.00.31.H14"), ResponseFor("000.00.51.H41", "doc-1"), "07")


def test_reading_keeps_bytes() -> None:
    """Reading never changes the tree: serialization before and after is identical."""
    tree = parse(sample("delivered-2019-852e179c-8eca-4502-ac38-0b97321f29c3.edxml"))
    before = etree.tostring(tree)
    read(tree)
    schema.validate(tree.getroot())
    assert etree.tostring(tree) == before
