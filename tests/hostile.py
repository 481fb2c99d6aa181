"""The hostile-input corpus of tests/test_hostile.py: what an attacker hands in, and the code it must get.

Each builder makes fresh bytes (a new DocumentId, a new signature), so no two cases share a SHA-256 and
no hub takes one for a duplicate of another.  Signed cases are made with the relay's own dev PKI: the
hubs trust the same root, so only the defect under test can make a case fail.  Every mutation checks
that it changed the bytes it was given (a no-op mutation would test nothing).

Families (names are static, so pytest can name each case before any bytes exist):

- ``PARSE``: malformed XML, entity and DTD attacks, size and depth, refused before any signature work;
- ``SIGNATURE``: signature wrapping, tampering, algorithms, certificates, signer binding, sent as a
  given agency (REST and folder senders; the raw AMQP sender also gets tests/signatures.py's corpus);
- ``POLICY`` and ``HEADERS``: who may send what, and hub-only AMQP headers set by an agency.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from broker.core import receipts
from broker.core.algorithms import DIGESTS, DS
from broker.core.edxml import EDXML_NS, E, Organ, ResponseFor, build_document, build_status
from broker.core.hoprecords import HopRecord, sign_record, utc_now
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign_tree
from broker.relay import devpki
from tests import signatures as ts
from tests.relay import Relay

AMQP_SENDER = "000.00.00.G22"    # hub national; tests/signatures.py's corpus is built for this agency
REST_SENDER = "000.00.01.H14"    # hub H14, through the REST gateway
FOLDER_SENDER = "000.00.00.H14"  # hub H14, a folder without a key: files go out as they are
FOLDER_SIGNER = "000.00.31.H14"  # hub H14-D31, a folder with the agency's key: unsigned files are signed
RECIPIENT = "000.00.00.H41"      # hub H41: every document is addressed here
BYSTANDER = "000.00.00.G17"      # hub national; its certificate is revoked before the hubs start
UNKNOWN = "999.99.99.H99"        # in no directory
MAX_BYTES = 300_000              # the relay's settings.max_bytes in these tests

SUBJECT = "Văn bản thử nghiệm"   # non-ASCII on purpose: the encoding cases depend on it


@dataclass(frozen=True)
class Case:
    """One hostile input: ``code`` is the refusal it must get (None: it is harmless and must be
    delivered once); ``told``: the sender must get a hub-signed rejection carrying ``code``."""

    name: str
    code: str | None
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    told: bool = True
    sender: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def changed(before: bytes, after: bytes, what: str) -> bytes:
    if after == before:
        raise AssertionError(f"the {what} mutation changed nothing")
    return after


class Kit:
    """Document and certificate makers bound to one relay's topology and PKI."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.pki = relay.settings.pki
        self.root = devpki.load_root(self.pki)

    def organ(self, organ_id: str) -> Organ:
        agency = self.relay.topology.agencies.get(organ_id)
        return Organ(organ_id, agency.name if agency else organ_id)

    def unsigned(self, sender: str, to: tuple[str, ...] = (RECIPIENT,), subject: str = SUBJECT) -> bytes:
        return build_document(self.organ(sender), [self.organ(r) for r in to], subject=subject,
                              attachments=[("cv.pdf", "application/pdf", b"%PDF-1.4 " + os.urandom(1500))])

    def signed(self, sender: str, to: tuple[str, ...] = (RECIPIENT,), subject: str = SUBJECT,
               key: SigningKey | None = None, data: bytes | None = None) -> bytes:
        """Signed by ``key`` (default: the sender's own), serialised as a careless client would."""
        return bytes(ts.signed(key or self.relay.key(sender), data or self.unsigned(sender, to, subject)))

    def issued(self, uid: str, **kw: Any) -> SigningKey:
        """A certificate from the relay's own root for ``uid`` (``devpki.issue`` keywords)."""
        got = devpki.issue(self.root, f"hostile {uid}", uid=uid, **kw)
        return SigningKey(got.key, got.cert)

    def hub_key(self, hub: str) -> SigningKey:
        d = self.pki / "hubs" / hub
        return SigningKey.load(d / "key.pem", d / "cert.pem")


# --- mutations of signed bytes ---------------------------------------------------------------


def edit(data: bytes, change: Callable[[Any], None], what: str) -> bytes:
    return changed(data, bytes(ts.edit(data, change)), what)


def _header(r: Any) -> Any:
    return r.find(f"{E}edXMLEnvelope/{E}edXMLHeader/{E}MessageHeader")


def wrapping_object(data: bytes) -> bytes:
    """Classic XSW: the signed MessageHeader hidden in a ds:Object, a forged one in its place."""
    def wrap(r: Any) -> None:
        mh = _header(r)
        etree.SubElement(ts.sig_of(r), DS + "Object").append(copy.deepcopy(mh))
        mh.find(E + "Subject").text = "forged subject"
    return edit(data, wrap, "wrapping-object")


def moved_signature(data: bytes) -> bytes:
    return edit(data, lambda r: ts.legacy_slot(r).append(ts.sig_of(r)), "moved-signature")


def two_signatures(data: bytes) -> bytes:
    return edit(data, lambda r: ts.legacy_slot(r).append(copy.deepcopy(ts.sig_of(r))), "two-signatures")


def signature_in_body(data: bytes) -> bytes:
    return edit(data, lambda r: r.find(f"{E}edXMLEnvelope/{E}edXMLBody").append(ts.sig_of(r)), "signature-in-body")


def extra_reference(data: bytes, key: SigningKey) -> bytes:
    def extra(r: Any) -> None:
        si = ts.sig_of(r).find(DS + "SignedInfo")
        si.append(copy.deepcopy(si.find(DS + "Reference")))
        ts.resign_signed_info(r, key)
    return edit(data, extra, "extra-reference")


def xpath_transform(data: bytes, key: SigningKey) -> bytes:
    def xpath(r: Any) -> None:
        t = ts.sig_of(r).find(f"{DS}SignedInfo/{DS}Reference/{DS}Transforms")
        x = etree.SubElement(t, DS + "Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
        etree.SubElement(x, DS + "XPath").text = "not(ancestor-or-self::*[local-name()='Subject'])"
        ts.resign_signed_info(r, key)
    return edit(data, xpath, "xpath-transform")


def reference_to_subtree(data: bytes, key: SigningKey) -> bytes:
    """The one Reference narrowed to the body: From and To would be unsigned."""

    def narrow(r: Any) -> None:
        body = r.find(f"{E}edXMLEnvelope/{E}edXMLBody")
        ref = ts.sig_of(r).find(f"{DS}SignedInfo/{DS}Reference")
        ref.set("URI", "#body")
        ref.find(DS + "DigestValue").text = base64.b64encode(hashlib.sha256(
            etree.tostring(body, method="c14n", exclusive=True)).digest()).decode()
        ts.resign_signed_info(r, key)
    return edit(data, narrow, "reference-to-subtree")


def bad_signature_value(data: bytes) -> bytes:
    def flip(r: Any) -> None:
        sv = ts.sig_of(r).find(DS + "SignatureValue")
        raw = bytearray(base64.b64decode(sv.text))
        raw[10] ^= 0xFF
        sv.text = base64.b64encode(bytes(raw)).decode()
    return edit(data, flip, "bad-signature-value")


def foreign_certificate(data: bytes, cert_pem: bytes) -> bytes:
    """KeyInfo swapped to another agency's certificate: the value no longer verifies with its key."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)

    def swap(r: Any) -> None:
        ts.sig_of(r).find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate").text = base64.b64encode(der).decode()
    return edit(data, swap, "wrong-key")


def sha1_signed(unsigned: bytes, key: SigningKey) -> bytes:
    tree = parse(unsigned)
    sign_tree(tree, key, digest=DIGESTS["http://www.w3.org/2000/09/xmldsig#sha1"])
    r = tree.getroot()
    ts.sig_of(r).find(f"{DS}SignedInfo/{DS}SignatureMethod").set(
        "Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    ts.resign_signed_info(r, key)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def added_recipient(data: bytes, organ_id: str) -> bytes:
    def add(r: Any) -> None:
        to = copy.deepcopy(_header(r).find(E + "To"))
        to.find(E + "OrganId").text = organ_id
        _header(r).find(E + "To").addnext(to)
    return edit(data, add, "added-recipient")


def unlisted_attachment(data: bytes) -> bytes:
    """An attachment the manifest does not list (made before signing: the signature is valid)."""
    def drop(r: Any) -> None:
        manifest = r.find(f"{E}edXMLEnvelope/{E}edXMLBody/{E}edXMLManifest")
        for child in list(manifest):
            manifest.remove(child)
    return edit(data, drop, "manifest")


def tampered_subject(data: bytes) -> bytes:
    return changed(data, data.replace(SUBJECT.encode(), "Văn bản đã sửa".encode(), 1), "tampered-subject")


def insert_in_subject(data: bytes, text: bytes, what: str) -> bytes:
    return changed(data, data.replace(b"<edXML:Subject>", b"<edXML:Subject>" + text, 1), what)


def encoding_lie(data: bytes) -> bytes:
    """Signed UTF-8 bytes declared ISO-8859-1: the parser reads other characters than were signed."""
    return changed(data, re.sub(rb"encoding=['\"]UTF-8['\"]", b"encoding='ISO-8859-1'", data, count=1),
                   "encoding-lie")


def oversize(data: bytes) -> bytes:
    return insert_in_subject(data, b"x" * MAX_BYTES, "oversize")


# --- PARSE: refused by the hardened parser -----------------------------------------------------

ParseBuilder = Callable[[Kit, str, str], bytes]
"""(kit, sender, tag) -> bytes; ``tag`` keeps constant payloads distinct per entry point."""


def _billion_laughs(tag: str) -> bytes:
    return (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
            b'<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
            b"<lolz>&lol4;" + tag.encode() + b"</lolz>")


PARSE: list[tuple[str, str, ParseBuilder]] = [
    ("truncated", "XML_MALFORMED", lambda k, s, t: k.signed(s)[:1200]),
    ("binary-garbage", "XML_MALFORMED", lambda k, s, t: t.encode() + bytes(range(256)) * 8),
    ("empty-body", "XML_MALFORMED", lambda k, s, t: b""),
    ("bad-encoding", "XML_MALFORMED", lambda k, s, t: insert_in_subject(k.signed(s), b"\xff\xfe", "bad-encoding")),
    ("nul-byte", "XML_MALFORMED", lambda k, s, t: insert_in_subject(k.signed(s), b"\x00", "nul-byte")),
    ("trailing-garbage", "XML_MALFORMED", lambda k, s, t: k.signed(s) + b"<second-root/>"),
    ("not-edxml-root", "EDXML_NAMESPACE",
     lambda k, s, t: b"<?xml version='1.0'?><html><body>" + t.encode() + b"</body></html>"),
    ("wrong-namespace", "EDXML_NAMESPACE",
     lambda k, s, t: changed(b := k.signed(s), b.replace(EDXML_NS.encode(), b"http://example.org/edxml"),
                             "wrong-namespace")),
    ("billion-laughs", "XML_FORBIDDEN", lambda k, s, t: _billion_laughs(t)),
    ("external-entity", "XML_FORBIDDEN",
     lambda k, s, t: b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                     b"<r>&x;" + t.encode() + b"</r>"),
    ("parameter-entity", "XML_FORBIDDEN",
     lambda k, s, t: b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
                     b"<r>" + t.encode() + b"</r>"),
    ("external-dtd", "XML_FORBIDDEN",
     lambda k, s, t: b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><r>' + t.encode() + b"</r>"),
    ("doctype-alone", "XML_FORBIDDEN",  # a bare DOCTYPE (no entity) in front of a genuine signed document
     lambda k, s, t: changed(b := k.signed(s), b.replace(b"?>\n", b"?>\n<!DOCTYPE edXML>\n", 1), "doctype")),
    ("xinclude", "XML_FORBIDDEN",
     lambda k, s, t: insert_in_subject(k.signed(s), b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
                                                    b'href="file:///etc/passwd" parse="text"/>', "xinclude")),
    ("too-deep", "XML_TOO_DEEP", lambda k, s, t: b"<a>" * 5000 + t.encode() + b"</a>" * 5000),
    ("too-deep-in-edxml", "XML_TOO_DEEP",
     lambda k, s, t: insert_in_subject(k.signed(s), b"<x>" * 70 + b"</x>" * 70, "too-deep-in-edxml")),
    ("oversize", "XML_TOO_LARGE", lambda k, s, t: oversize(k.signed(s))),
    # well-formed, but what the parser reads is not what was signed
    ("processing-instruction-added", "SIG_DIGEST",
     lambda k, s, t: insert_in_subject(k.signed(s), b"<?evil run?>", "processing-instruction")),
    ("encoding-lie", "SIG_DIGEST", lambda k, s, t: encoding_lie(k.signed(s))),
]


# --- SIGNATURE: sent as a given agency, refused by its hub -----------------------------------

SigBuilder = Callable[[Kit, str], bytes]


def _sig(k: Kit, s: str) -> bytes:
    return k.signed(s)


SIGNATURE: list[tuple[str, str, SigBuilder]] = [
    ("unsigned", "SIG_MISSING", lambda k, s: k.unsigned(s)),
    ("tampered-subject", "SIG_DIGEST", lambda k, s: tampered_subject(_sig(k, s))),
    ("tampered-attachment", "SIG_DIGEST",
     lambda k, s: changed(b := _sig(k, s), b.replace(b"ContentTransferEncoded>JVBERi0xLjQg",
                                                     b"ContentTransferEncoded>JVBERi0xLjUg", 1), "attachment")),
    ("added-recipient", "SIG_DIGEST", lambda k, s: added_recipient(_sig(k, s), BYSTANDER)),
    ("bad-signature-value", "SIG_INVALID", lambda k, s: bad_signature_value(_sig(k, s))),
    ("wrong-key", "SIG_INVALID",
     lambda k, s: foreign_certificate(_sig(k, s), (k.pki / "agencies" / RECIPIENT / "cert.pem").read_bytes())),
    ("wrapping-object", "SIG_PROFILE", lambda k, s: wrapping_object(_sig(k, s))),
    ("moved-signature", "SIG_PROFILE", lambda k, s: moved_signature(_sig(k, s))),
    ("two-signatures", "SIG_PROFILE", lambda k, s: two_signatures(_sig(k, s))),
    ("reference-to-subtree", "SIG_PROFILE", lambda k, s: reference_to_subtree(_sig(k, s), k.relay.key(s))),
    ("extra-reference", "SIG_PROFILE", lambda k, s: extra_reference(_sig(k, s), k.relay.key(s))),
    ("xpath-transform", "SIG_PROFILE", lambda k, s: xpath_transform(_sig(k, s), k.relay.key(s))),
    ("signature-in-body", "EDXML_SCHEMA", lambda k, s: signature_in_body(_sig(k, s))),
    ("sha1", "SIG_ALGORITHM", lambda k, s: sha1_signed(k.unsigned(s), k.relay.key(s))),
    ("untrusted-root", "CERT_UNTRUSTED",
     lambda k, s: k.signed(s, key=SigningKey(*_rogue(s)))),
    ("self-signed", "CERT_UNTRUSTED",
     lambda k, s: k.signed(s, key=SigningKey(*_self_signed(s)))),
    ("expired", "CERT_EXPIRED",
     lambda k, s: k.signed(s, key=k.issued(s, not_before=datetime.now(UTC) - timedelta(days=40), days=10))),
    ("not-yet-valid", "CERT_EXPIRED",
     lambda k, s: k.signed(s, key=k.issued(s, not_before=datetime.now(UTC) + timedelta(days=2), days=10))),
    ("revoked", "CERT_REVOKED", lambda k, s: k.signed(s, key=k.relay.key(BYSTANDER))),
    ("wrong-key-usage", "CERT_USAGE", lambda k, s: k.signed(s, key=k.issued(s, can_sign=False))),
    ("signer-not-from", "SIGNER_MISMATCH", lambda k, s: k.signed(s, key=k.relay.key(RECIPIENT))),
    ("unknown-recipient", "RECIPIENT_UNKNOWN", lambda k, s: k.signed(s, to=(UNKNOWN,))),
    ("unknown-among-known-recipients", "RECIPIENT_UNKNOWN", lambda k, s: k.signed(s, to=(RECIPIENT, UNKNOWN))),
    ("manifest-mismatch", "EDXML_MANIFEST",
     lambda k, s: k.signed(s, data=unlisted_attachment(k.unsigned(s)))),
    ("same-recipient-twice", "EDXML_SCHEMA", lambda k, s: k.signed(s, to=(RECIPIENT, RECIPIENT))),
    # a genuine document of another agency (signed by it), handed in by this one
    ("spoofed-sender", "SENDER_NOT_ALLOWED", lambda k, s: k.signed(RECIPIENT, to=(s,))),
]


def _rogue(uid: str) -> tuple[Any, x509.Certificate]:
    rogue = devpki.issue(devpki.make_root("rogue root"), "rogue", uid=uid)
    return rogue.key, rogue.cert


def _self_signed(uid: str) -> tuple[Any, x509.Certificate]:
    own = devpki.make_root(f"self-signed {uid}")
    return own.key, own.cert


# --- the raw AMQP batch ------------------------------------------------------------------------


def _hub_trace(k: Kit, body: bytes) -> list[str]:
    """A genuine hop record, signed with the national hub's own key: an agency still may not carry one."""
    record = HopRecord(hub="national", at=utc_now(), digest=hashlib.sha256(body).hexdigest(),
                       document_id="stolen", verdict="forwarded", targets=(f"inbox:{RECIPIENT}",),
                       recipients=(RECIPIENT,))
    return [sign_record(record, k.hub_key("national"))]


def _hub_receipt(k: Kit) -> bytes:
    return receipts.build(receipts.Receipt(kind="accepted", hub="national", time=utc_now(), document_id="x",
                                           document_sha256="0" * 64, sender=AMQP_SENDER,
                                           recipients=(RECIPIENT,)), k.hub_key("national"))


HeaderBuilder = Callable[[Kit], tuple[bytes, dict[str, Any]]]


def _doc(k: Kit, subject: str, sender: str = AMQP_SENDER, to: tuple[str, ...] = (RECIPIENT,)) -> bytes:
    return k.signed(sender, to=to, subject=f"{SUBJECT} {subject}")


def _traced(k: Kit) -> tuple[bytes, dict[str, Any]]:
    body = _doc(k, "vết thật")
    return body, {"lt-trace": _hub_trace(k, body)}


# name -> (expected code, the sender is told, builder)
HEADERS: list[tuple[str, str | None, bool, HeaderBuilder]] = [
    ("hdr-trace-forged", "TRACE_INVALID", True, lambda k: (_doc(k, "vết giả"), {"lt-trace": ["forged.token"]})),
    ("hdr-trace-hub-signed", "TRACE_INVALID", True, _traced),
    ("hdr-trace-not-a-list", "TRACE_INVALID", True, lambda k: (_doc(k, "vết số"), {"lt-trace": 5})),
    ("hdr-kind-receipt-on-document", "SENDER_NOT_ALLOWED", False,
     lambda k: (_doc(k, "giả biên nhận"), {"lt-kind": "receipt"})),
    ("hdr-kind-receipt-hub-signed", "SENDER_NOT_ALLOWED", False,
     lambda k: (_hub_receipt(k), {"lt-kind": "receipt", "lt-to": AMQP_SENDER})),
    ("hdr-origin-claims-the-from-agency", "SENDER_NOT_ALLOWED", True,
     lambda k: (_doc(k, "nguồn giả", sender=RECIPIENT, to=(BYSTANDER,)), {"lt-origin": f"agency:{RECIPIENT}"})),
    ("hdr-origin-claims-a-hub-link", "SENDER_NOT_ALLOWED", True,
     lambda k: (_doc(k, "liên kết giả", sender=RECIPIENT, to=(BYSTANDER,)), {"lt-origin": "link:H41"})),
    ("hdr-code-and-hub-forged", "RECIPIENT_UNKNOWN", True,
     lambda k: (_doc(k, "mã giả", to=(UNKNOWN,)),
                {"lt-code": "RETRY_EXHAUSTED", "lt-hub": "H41", "lt-reason": "forged", "lt-attempt": 99})),
    # harmless: the hub reads who sent it from the exchange, and whom for from the signed document
    ("hdr-recipients-forged", None, True, lambda k: (_doc(k, "người nhận giả"), {"lt-recipients": [BYSTANDER]})),
    ("hdr-origin-and-replay-on-own-document", None, True,
     lambda k: (_doc(k, "nguồn giả của mình"), {"lt-origin": "link:H41", "lt-replay": "forged", "lt-hub": "H41"})),
]

POLICY: list[tuple[str, str, Callable[[Kit], bytes]]] = [
    ("status-to-unknown-agency", "RECIPIENT_UNKNOWN",
     lambda k: k.signed(AMQP_SENDER, data=build_status(k.organ(AMQP_SENDER), ResponseFor(UNKNOWN, "1/LT"), "01"))),
    ("status-spoofed", "SENDER_NOT_ALLOWED",
     lambda k: k.signed(RECIPIENT, data=build_status(k.organ(RECIPIENT), ResponseFor(BYSTANDER, "2/LT"), "03"))),
]


def amqp_cases(k: Kit) -> list[Case]:
    """Everything the raw AMQP sender publishes in one batch."""
    out = [Case(f"sig-{name}", code, build(k.pki, k.root), sender=AMQP_SENDER) for name, build, code in ts.CASES]
    out += [Case(name, code, build(k, AMQP_SENDER, "amqp"), sender=AMQP_SENDER) for name, code, build in PARSE]
    out += [Case(f"policy-{name}", code, build(k, AMQP_SENDER), sender=AMQP_SENDER)
            for name, code, build in SIGNATURE if name in AMQP_POLICY]
    out += [Case(name, code, build(k), sender=AMQP_SENDER) for name, code, build in POLICY]
    for name, code, told, hbuild in HEADERS:
        body, headers = hbuild(k)
        out.append(Case(name, code, body, headers, told=told, sender=AMQP_SENDER))
    return out


AMQP_POLICY = ("unknown-recipient", "unknown-among-known-recipients", "manifest-mismatch", "same-recipient-twice",
               "spoofed-sender")
AMQP_NAMES = ([f"sig-{n}" for n, _, _ in ts.CASES] + [n for n, _, _ in PARSE] + [f"policy-{n}" for n in AMQP_POLICY]
              + [n for n, _, _ in POLICY] + [n for n, _, _, _ in HEADERS])
