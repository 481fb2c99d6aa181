"""The edXML model (QCVN 102:2016): read messages into Python types, build new ones.

Reading never changes the tree: the bytes a sender signed stay the bytes
that travel.  What the schema cannot say (exactly one ``From``, at least one
``To``, manifest and attachments matching one to one, attachments that
are real base64) is checked here, with a specific error for each.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from lxml import etree

from broker.core.errors import ManifestMismatch, SchemaViolation, WrongNamespace
from broker.core.parsing import Children, children, text_of
from broker.i18n import N_

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
E = "{" + EDXML_NS + "}"
DATE_FORMAT = "%Y/%m/%d"
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S"

Kind = Literal["document", "status"]
STATUS_CODES = {
    "01": "received", "02": "rejected", "03": "accepted", "04": "assigned", "05": "processing",
    "06": "completed", "13": "revocation requested", "15": "change accepted", "16": "change refused",
}
BUSINESS_TYPES = {"0": "new", "1": "revocation", "2": "update", "3": "replacement"}


@dataclass(frozen=True)
class Organ:
    """An agency as named in a message (``From``, ``To``, ``ResponseFor``)."""

    organ_id: str
    name: str = ""


@dataclass(frozen=True)
class Attachment:
    """An attachment: base64 text linked to a manifest reference by ``ContentId``."""

    content_id: str
    name: str
    content_type: str
    encoded: str = field(repr=False)

    def content(self) -> bytes:
        return base64.b64decode("".join(self.encoded.split()))


@dataclass(frozen=True)
class ResponseFor:
    """The document a status message (or a reply) refers to."""

    organ_id: str
    document_id: str
    code: str = ""


@dataclass(frozen=True)
class Business:
    """``TraceHeaderList/Bussiness``: revocation, update or replacement of an earlier document."""

    doc_type: str
    document_id: str
    reason: str = ""

    @property
    def meaning(self) -> str:
        return BUSINESS_TYPES.get(self.doc_type, "unknown")


@dataclass(frozen=True)
class Message:
    """What routing, policy and evidence need from an edXML message."""

    kind: Kind
    sender: Organ
    recipients: tuple[Organ, ...]
    document_id: str
    subject: str = ""
    code: str = ""
    status_code: str | None = None
    response_for: ResponseFor | None = None
    business: Business | None = None
    attachments: tuple[Attachment, ...] = ()
    timestamp: str = ""

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(o.organ_id for o in self.recipients)


def header_of(root: etree._Element) -> etree._Element:
    """``edXMLEnvelope/edXMLHeader`` of a message, or a schema error."""
    if root.tag != E + "edXML":
        raise WrongNamespace(N_("root element is {element!r} in namespace {found!r}; expected edXML in {namespace}"),
                             element=_local(root.tag), found=_ns(root.tag), namespace=EDXML_NS)
    header = next((h for env in root.iterchildren(E + "edXMLEnvelope") for h in env.iterchildren(E + "edXMLHeader")),
                  None)
    if header is None:
        raise SchemaViolation(N_("edXMLEnvelope/edXMLHeader is missing"))
    return header


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


def _ns(tag: object) -> str:
    t = str(tag)
    return t[1:].partition("}")[0] if t.startswith("{") else ""


def _text(kids: Children, name: str, inner: str = "") -> str:
    """The stripped text of the first ``name`` child, or of the first ``inner`` child of a
    ``name`` child (the path ``name/inner``); '' if there is none."""
    for el in kids.get(E + name, ()):
        if not inner:
            return text_of(el).strip()
        for c in el:
            if c.tag == E + inner:
                return text_of(c).strip()
    return ""


def _one(kids: Children, name: str, where: str) -> etree._Element:
    found = kids.get(E + name, [])
    if len(found) != 1:
        raise SchemaViolation(N_("{where} must have exactly one {name}, found {n}"), where=where, name=name,
                              n=len(found))
    return found[0]


def _organ(el: etree._Element, where: str) -> Organ:
    kids = children(el)
    organ_id = _text(kids, "OrganId")
    if not organ_id:
        raise SchemaViolation(N_("{where}/OrganId is missing or empty"), where=where)
    return Organ(organ_id, _text(kids, "OrganName"))


def read(tree: etree._ElementTree | etree._Element) -> Message:
    """Read a schema-valid edXML message into a :class:`Message`."""
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    header = children(header_of(root))
    mh_el = _one(header, "MessageHeader", "edXMLHeader")
    mh = children(mh_el)
    sender = _organ(_one(mh, "From", "MessageHeader"), "From")
    status_code = _text(mh, "StatusCode") or None
    response_for = None
    if E + "ResponseFor" in mh:
        rf = children(mh[E + "ResponseFor"][0])
        if _text(rf, "OrganId"):
            response_for = ResponseFor(_text(rf, "OrganId"), _text(rf, "DocumentId"), _text(rf, "Code"))
    business = None
    b_el = next((c for t in header.get(E + "TraceHeaderList", ()) for c in t if c.tag == E + "Bussiness"), None)
    if b_el is not None:
        b = children(b_el)
        business = Business(_text(b, "BussinessDocType"), _text(b, "DocumentId"), _text(b, "BussinessDocReason"))

    if status_code is not None:
        _one(mh, "StatusCode", "MessageHeader")
        if response_for is None or not response_for.document_id:
            raise SchemaViolation(N_("a status message needs ResponseFor with OrganId and DocumentId"))
        # A status travels back to the agency that sent the document.
        return Message(kind="status", sender=sender, recipients=(Organ(response_for.organ_id),),
                       document_id=response_for.document_id, status_code=status_code,
                       response_for=response_for, business=business,
                       timestamp=_text(mh, "Timestamp"))

    recipients = tuple(_organ(to, "To") for to in mh.get(E + "To", ()))
    if not recipients:
        raise SchemaViolation(N_("a document needs at least one To agency"))
    if len({r.organ_id for r in recipients}) != len(recipients):
        raise SchemaViolation(N_("the same To agency is listed twice"))
    document_id = text_of(_one(mh, "DocumentId", "MessageHeader"))
    if not document_id.strip():
        raise SchemaViolation(N_("DocumentId is empty"))
    code = "/".join(x for x in (_text(mh, "Code", "CodeNumber"), _text(mh, "Code", "CodeNotation")) if x)
    return Message(kind="document", sender=sender, recipients=recipients,
                   document_id=document_id.strip(), subject=_text(mh, "Subject"), code=code,
                   response_for=response_for, business=business,
                   attachments=_attachments(root))


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
_FULL_QUADS = {(0, 0), (2, 2), (3, 1)}
"""(data characters modulo 4, padding characters) of base64 that decodes, leaving out the odd
cases ``b64decode`` also accepts (padding after whole quads), which take the slow path."""


def is_base64(text: str) -> bool:
    """Whether ``text`` decodes as ``base64.b64decode("".join(text.split()), validate=True)``
    decodes it, without decoding it.

    Every hop checks each attachment; decoding a megabyte cost more than the rest of the check
    together.  One byte translation answers for the usual text (ASCII, the base64 alphabet, a
    correct padding at the end, any line breaks); anything else is judged by decoding, so the
    answer is always the decoder's (``tests/test_edxml.py`` compares the two)."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        pass  # not ASCII: the decoder judges it
    else:
        others = data.translate(None, _B64_ALPHABET)  # of base64, only line breaks and the padding
        padding = others.translate(None, _ASCII_SPACE)
        if padding == b"=" * len(padding) and data.rstrip(_ASCII_SPACE).endswith(padding) and \
                ((len(data) - len(others)) % 4, len(padding)) in _FULL_QUADS:
            return True
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def path_of(el: etree._Element, *steps: str) -> list[etree._Element]:
    """What ``el.findall("a/b/c")`` finds, walking the children in C (``findall`` parses and runs
    the path in Python, at every hop)."""
    found = [el]
    for step in steps:
        found = [c for f in found for c in f.iterchildren(E + step)]
    return found


def _attachments(root: etree._Element) -> tuple[Attachment, ...]:
    refs = [_text(children(r), "ContentId") for r in path_of(root, "edXMLEnvelope", "edXMLBody", "edXMLManifest",
                                                                 "Reference")]
    found: dict[str, Attachment] = {}
    for a in path_of(root, "AttachmentEncoded", "Attachment"):
        kids = children(a)
        cid = _text(kids, "ContentId")
        if cid in found:
            raise ManifestMismatch(N_("two attachments share ContentId {cid!r}"), cid=cid)
        encoded = _text(kids, "ContentTransferEncoded")
        if not is_base64(encoded):
            raise ManifestMismatch(N_("attachment {cid!r} is not valid base64"), cid=cid)
        found[cid] = Attachment(cid, _text(kids, "AttachmentName"), _text(kids, "ContentType"), encoded)
    if len(set(refs)) != len(refs):
        raise ManifestMismatch(N_("the manifest lists the same ContentId twice"))
    missing = [c for c in refs if c not in found]
    if missing:
        raise ManifestMismatch(N_("manifest reference {cid!r} has no attachment"), cid=missing[0])
    extra = [c for c in found if c not in refs]
    if extra:
        raise ManifestMismatch(N_("attachment {cid!r} is not listed in the manifest"), cid=extra[0])
    return tuple(found[c] for c in refs)


# --- building -----------------------------------------------------------------


def _el(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, E + name)
    if text is not None:
        el.text = text
    return el


def _organ_el(parent: etree._Element, name: str, organ: Organ) -> None:
    el = _el(parent, name)
    _el(el, "OrganId", organ.organ_id)
    if organ.name:
        _el(el, "OrganName", organ.name)


def _envelope() -> tuple[etree._Element, etree._Element]:
    root = etree.Element(E + "edXML", nsmap={None: EDXML_NS})
    env = etree.SubElement(root, E + "edXMLEnvelope", nsmap={"edXML": EDXML_NS})
    header = _el(env, "edXMLHeader")
    return root, header


def _serialize(root: etree._Element) -> bytes:
    etree.indent(root, space="  ")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def build_document(sender: Organ, recipients: Sequence[Organ], *, subject: str,
                   document_id: str | None = None, code_number: str = "1",
                   code_notation: str = "LT", content: str = "",
                   attachments: Sequence[tuple[str, str, bytes]] = (),
                   business: Business | None = None, when: datetime | None = None) -> bytes:
    """A new, unsigned edXML document; ``attachments`` are ``(name, content_type, bytes)``."""
    when = when or datetime.now()
    root, header = _envelope()
    mh = _el(header, "MessageHeader")
    _organ_el(mh, "From", sender)
    for r in recipients:
        _organ_el(mh, "To", r)
    _el(mh, "DocumentId", document_id or str(uuid.uuid4()))
    code = _el(mh, "Code")
    _el(code, "CodeNumber", code_number)
    _el(code, "CodeNotation", code_notation)
    pi = _el(mh, "PromulgationInfo")
    _el(pi, "Place", "Hà Nội")
    _el(pi, "PromulgationDate", when.strftime(DATE_FORMAT))
    dt = _el(mh, "DocumentType")
    _el(dt, "Type", "1")
    _el(dt, "TypeName", "Công văn")
    _el(mh, "Subject", subject)
    _el(mh, "Content", content or subject)
    _el(_el(mh, "SignerInfo"), "FullName", sender.name or sender.organ_id)
    _el(mh, "SteeringType", "1")
    thl = _el(header, "TraceHeaderList")
    th = _el(thl, "TraceHeader")
    _el(th, "OrganId", sender.organ_id)
    _el(th, "Timestamp", when.strftime(TIMESTAMP_FORMAT))
    if business is not None:
        b = _el(thl, "Bussiness")
        _el(b, "DocumentId", business.document_id)
        _el(b, "BussinessDocType", business.doc_type)
        _el(b, "BussinessDocReason", business.reason)
        _el(b, "Paper", "0")
    body = _el(header.getparent(), "edXMLBody")
    manifest = _el(body, "edXMLManifest")
    manifest.set("version", "1.0")
    encoded_root = etree.SubElement(root, E + "AttachmentEncoded") if attachments else None
    for name, ctype, data in attachments:
        cid = f"cid:{uuid.uuid4()}"
        ref = _el(manifest, "Reference")
        _el(ref, "ContentId", cid)
        _el(ref, "ContentType", ctype)
        _el(ref, "AttachmentName", name)
        assert encoded_root is not None
        att = _el(encoded_root, "Attachment")
        _el(att, "ContentId", cid)
        _el(att, "AttachmentName", name)
        _el(att, "ContentType", ctype)
        _el(att, "ContentTransferEncoded", base64.b64encode(data).decode())
    return _serialize(root)


def build_status(sender: Organ, response_for: ResponseFor, status_code: str, *,
                 description: str = "", staff: str = "", when: datetime | None = None) -> bytes:
    """A new, unsigned edXML status message about ``response_for``."""
    if status_code not in STATUS_CODES:
        raise SchemaViolation(N_("status code {status_code!r} is not one of {codes}"), status_code=status_code,
                              codes=', '.join(STATUS_CODES))
    when = when or datetime.now()
    root, header = _envelope()
    mh = _el(header, "MessageHeader")
    _organ_el(mh, "From", sender)
    rf = _el(mh, "ResponseFor")
    _el(rf, "OrganId", response_for.organ_id)
    if response_for.code:
        _el(rf, "Code", response_for.code)
    _el(rf, "DocumentId", response_for.document_id)
    si = _el(mh, "StaffInfo")
    _el(si, "Staff", staff or sender.name or sender.organ_id)
    _el(mh, "StatusCode", status_code)
    _el(mh, "Description", description or STATUS_CODES[status_code])
    _el(mh, "Timestamp", when.strftime(TIMESTAMP_FORMAT))
    return _serialize(root)
