"""Transport receipts: signed by a hub, binding the SHA-256 of the exact bytes they speak of.

A receipt is a small XML document in the lienthong receipt namespace with an
enveloped XMLDSig signature (the same profile as edXML, signature last in
the root), so auditors can verify it with lienthong or with xmlsec1.

Kinds: ``accepted`` (at the sender's hub), ``delivered`` (into the
recipient's inbox), ``rejected`` (with a code and a reason).  A receipt is
addressed to the agency that sent the document and travels back to its
inbox through the hubs, each of which verifies the hub signature.

Receipts a hub issues in one I/O loop turn for the agencies of another hub travel as one
*bundle* (:func:`pack`): the hubs on the way check and forward one message, not one per receipt,
and the agencies' own hub takes the receipts out, checks each, and puts each into its inbox.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from broker.core.errors import SchemaViolation, SignatureError, TraceInvalid
from broker.core.hoprecords import utc_now
from broker.core.parsing import DEFAULT_LIMITS, children, parse, text_of
from broker.core.signer import SigningKey, enveloped_signature
from broker.core.topology import subject_uid
from broker.core.trust import TrustStore
from broker.core.verifier import VerifiedSignature, verify_tree
from broker.i18n import N_

RECEIPT_NS = "urn:lienthong:receipt:1"
R = "{" + RECEIPT_NS + "}"
KINDS = ("accepted", "delivered", "rejected")
MAX_BUNDLED = 128
"""Receipts in one bundle at most (a turn's deliveries are bounded by the prefetch; larger
turns leave as several bundles)."""
FIELDS = ("Kind", "Hub", "Time", "DocumentId", "DocumentSha256", "From", "To", "Code", "Reason")


@dataclass(frozen=True)
class Receipt:
    kind: str
    hub: str
    time: str
    document_id: str
    document_sha256: str
    sender: str
    """The agency that sent the document (and receives this receipt)."""
    recipients: tuple[str, ...] = ()
    code: str = ""
    reason: str = ""


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CANONICAL_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#xD;"})
_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def build(receipt: Receipt, key: SigningKey) -> bytes:
    """Serialize and sign ``receipt`` with the hub's key.

    Written as text rather than built as a tree: its exclusive canonical form, which the
    signature's digest covers, and the bytes sent differ only in how ``\r`` is escaped (every
    hub writes two receipts per document; the tree, its two canonicalizations and its
    serialization cost twice the signature)."""
    if receipt.kind not in KINDS:
        raise ValueError(f"unknown receipt kind {receipt.kind!r}")
    values = {"Kind": receipt.kind, "Hub": receipt.hub, "Time": receipt.time or utc_now(),
              "DocumentId": receipt.document_id, "DocumentSha256": receipt.document_sha256,
              "From": receipt.sender, "Code": receipt.code, "Reason": receipt.reason}
    fields = [(name, value) for name in FIELDS
              for value in (receipt.recipients if name == "To" else (values[name],))]
    if any(_NOT_XML.search(value) for _, value in fields):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    root = f'<lt:Receipt xmlns:lt="{RECEIPT_NS}" version="1">'

    def body(escape: dict[int, str]) -> str:
        return root + "".join(f"<lt:{name}>{value.translate(escape)}</lt:{name}>" for name, value in fields)

    signature = enveloped_signature((body(_CANONICAL_TEXT) + "</lt:Receipt>").encode(), key)
    return b"<?xml version='1.0' encoding='UTF-8'?>\n" + body(_TEXT).encode() + signature + b"</lt:Receipt>"


def read(tree: etree._ElementTree) -> Receipt:
    root = tree.getroot()
    if root.tag != R + "Receipt":
        raise SchemaViolation(N_("not a lienthong receipt"))

    kids = children(root)

    def one(name: str) -> str:
        found = kids.get(R + name, [])
        if len(found) != 1:
            raise SchemaViolation(N_("receipt must have exactly one {name}"), name=name)
        return text_of(found[0])

    kind = one("Kind")
    if kind not in KINDS:
        raise SchemaViolation(N_("receipt kind {kind!r} is unknown"), kind=kind)
    return Receipt(kind=kind, hub=one("Hub"), time=one("Time"), document_id=one("DocumentId"),
                   document_sha256=one("DocumentSha256"), sender=one("From"),
                   recipients=tuple(text_of(e) for e in kids.get(R + "To", ())),
                   code=one("Code"), reason=one("Reason"))


@dataclass(frozen=True)
class VerifiedReceipt:
    receipt: Receipt
    signature: VerifiedSignature


def verify(data: bytes, trust: TrustStore, *, at: datetime | None = None) -> VerifiedReceipt:
    """Verify a receipt: hub signature chained to the trust store, signer = the hub it names."""
    tree = parse(data, DEFAULT_LIMITS)
    receipt = read(tree)
    sig = verify_tree(tree, trust, at=at, parent=tree.getroot())
    if subject_uid(sig.signer) != f"hub:{receipt.hub}":
        signer = subject_uid(sig.signer)
        raise SignatureError(N_("receipt claims hub {hub!r} but is signed by {signer!r}") if signer else
                             N_("receipt claims hub {hub!r} but is signed by 'an unknown key'"), hub=receipt.hub,
                             signer=signer)
    return VerifiedReceipt(receipt, sig)


def read_bytes(data: bytes) -> Receipt:
    """Read a receipt's fields without verifying it (use :func:`verify` for that)."""
    return read(parse(data, DEFAULT_LIMITS))


@dataclass(frozen=True)
class Bundled:
    """One receipt of a bundle, as it goes into its agency's inbox."""

    to: str
    """The agency it is addressed to (``lt-to``)."""
    issued: str
    """The issuing hub's signed record of the receipt (``lt-issued``)."""
    receipt: bytes


def pack(home: str, items: Sequence[Bundled]) -> bytes:
    """The body of a bundle for agencies of hub ``home``: canonical JSON, receipts in base64
    (their exact signed bytes)."""
    if not 0 < len(items) <= MAX_BUNDLED:
        raise ValueError(f"a bundle holds 1 to {MAX_BUNDLED} receipts, not {len(items)}")
    return json.dumps({"hub": home, "receipts": [
        {"to": i.to, "issued": i.issued, "receipt": base64.b64encode(i.receipt).decode()} for i in items]},
        sort_keys=True, separators=(",", ":")).encode()


def unpack(body: bytes) -> tuple[str, list[Bundled]]:
    """The home hub and the receipts of a bundle; TRACE_INVALID if it is not one."""
    try:
        d = json.loads(body)
        items = [Bundled(str(r["to"]), str(r["issued"]), base64.b64decode(r["receipt"], validate=True))
                 for r in d["receipts"]]
        home = d["hub"]
    except (ValueError, TypeError, KeyError) as exc:  # binascii.Error is a ValueError
        raise TraceInvalid(N_("a receipt bundle is malformed: {reason}"), reason=exc) from None
    if not isinstance(home, str) or not 0 < len(items) <= MAX_BUNDLED:
        raise TraceInvalid(N_("a receipt bundle names one hub and holds 1 to {most} receipts"), most=MAX_BUNDLED)
    return home, items
