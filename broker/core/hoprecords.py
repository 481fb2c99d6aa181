"""Hop records: what a hub did with a message, signed by the hub, carried beside the message.

A record is canonical JSON (sorted keys, no spaces, UTF-8) followed by a
dot and the base64url ECDSA/RSA signature of those bytes by the hub's key:
``<json>.<sig>``.  Each record names the digest of the previous record in
the message's trace, so the trace is a chain that cannot be reordered or
cut in the middle.  The signed document itself is never touched.

A hub's certificate is judged by the trust store in force each time one of its records is
checked (:func:`hub_certificate`): a hub revoked while others run has its records refused
(``HUB_REVOKED``) from the next snapshot on, and the other hubs' records go on.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from broker.core import sealing
from broker.core.errors import CertificateError, HubRevoked, TraceInvalid
from broker.core.signer import SigningKey
from broker.core.trust import TrustStore
from broker.core.wire import H_TRACE
from broker.i18n import N_

if TYPE_CHECKING:
    from broker.core.outcome import Outcome


class RecordKind(StrEnum):
    """What a signed record says a hub did (its ``verdict`` field)."""

    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    RECEIPT = "receipt"
    """The hub issued this receipt for this agency (``lt-issued``)."""
    RECEIPTS = "receipts"
    """The hub bundled these receipts for the agencies of one hub (``lt-issued`` of a bundle)."""
    CHECKPOINT = "checkpoint"
    """The head of the hub's audit log at ``extra.seq``."""
    WITNESS = "witness"
    """The hub countersigned a neighbour's checkpoint."""


@dataclass(frozen=True)
class HopRecord:
    hub: str
    at: str
    digest: str
    """SHA-256 (hex) of the exact signed bytes of the message."""
    document_id: str
    verdict: str
    """A :class:`RecordKind` (read back from a token: whatever string it holds)."""
    targets: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    code: str = ""
    prev: str = ""
    """SHA-256 of the previous record token in the trace ('' for the first hop)."""
    extra: Mapping[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, UTF-8 (what the hub signs)."""
        d = {"at": self.at, "code": self.code, "digest": self.digest, "document_id": self.document_id,
             "extra": dict(self.extra), "hub": self.hub, "prev": self.prev, "recipients": list(self.recipients),
             "targets": list(self.targets), "verdict": self.verdict}
        return _CANONICAL_JSON.encode(d).encode()


_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""One encoder for every record: ``json.dumps`` with options builds a new one per call."""
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_SHA256 = hashes.SHA256()


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def utc_now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """A record's (or receipt's) ``at`` as an aware UTC datetime; ValueError if it is not one."""
    if not _TIME.fullmatch(text):  # exactly TIME_FORMAT: 2026-11-22T15:02:07.221973Z
        raise ValueError(f"{text!r} is not a UTC time like 2026-11-22T15:02:07.221973Z")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)  # strptime is ten times slower


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: SigningKey, data: bytes) -> bytes:
    if isinstance(key.key, ec.EllipticCurvePrivateKey):
        return key.key.sign(data, _ECDSA_SHA256)
    return key.key.sign(data, padding.PKCS1v15(), _SHA256)


def _signed_alone(payload: bytes, key: SigningKey) -> str:
    """A version 1 token: ``<JSON>.<signature over the JSON>``."""
    return payload.decode() + "." + _b64u(_sign(key, payload))


def sign_record(record: HopRecord, key: SigningKey) -> str:
    return _signed_alone(record.payload(), key)


PENDING = "\x00pending hop record "
"""How a record of a :class:`RecordBatch` reads until the batch is sealed (never on the wire)."""


class RecordBatch:
    """The records a hub writes while it judges one batch of deliveries, signed together when the
    batch is judged (:mod:`broker.core.sealing`): :meth:`add` gives a placeholder, :meth:`seal`
    signs, :meth:`resolve` puts the tokens into an outcome.  A batch of one record is signed alone."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self._payloads: list[bytes] = []
        self.tokens: dict[str, str] = {}

    def add(self, record: HopRecord) -> str:
        self._payloads.append(record.payload())
        return f"{PENDING}{len(self._payloads) - 1}"

    def seal(self) -> None:
        payloads = self._payloads
        if len(payloads) == 1:
            tokens = [_signed_alone(payloads[0], self.key)]
        elif payloads:
            root, paths = sealing.tree(payloads)
            sig = _b64u(_sign(self.key, sealing.signed_bytes(root)))
            tokens = [f"{p.decode()}.{sig}.{_b64u(path)}" for p, path in zip(payloads, paths, strict=True)]
        else:
            tokens = []
        self.tokens = {f"{PENDING}{i}": t for i, t in enumerate(tokens)}

    def resolve(self, outcome: Outcome) -> Outcome:
        """``outcome`` with the tokens of its records in place of their placeholders."""
        if not self.tokens:
            return outcome
        resolved = outcome.with_tokens(self.tokens)
        assert not resolved.record.startswith(PENDING), "a hop record was left unsigned"
        return resolved


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def routed_to(record: HopRecord, target: str) -> tuple[str, ...]:
    """The recipients ``record``'s hub routed to ``target`` (``hub:<id>`` or ``inbox:<code>``)."""
    for part in record.extra.get("routes", "").split(";"):
        name, _, recips = part.partition("=")
        if name == target:
            return tuple(r for r in recips.split(",") if r)
    return ()


def check_path(records: Sequence[HopRecord], neighbours: Callable[[str], Sequence[str]], first_hub: str,
               here: str) -> tuple[str, ...]:
    """The hubs of a verified trace form a path of the topology that ends here: it starts at the
    sender's hub, passes no hub twice, each hub forwarded to the next one (a neighbour, named
    in its targets), and the recipients routed along it only narrow.  Returns the recipients
    routed here."""
    hubs = [r.hub for r in records] + [here]
    if not records or records[0].hub != first_hub:
        raise TraceInvalid(N_("the first hop is not the sender's own hub"))
    if len(set(hubs)) != len(hubs):
        raise TraceInvalid(N_("the trace passes a hub twice"))
    allowed: set[str] | None = None
    for rec, nxt in zip(records, hubs[1:], strict=True):
        if rec.verdict != RecordKind.FORWARDED:
            raise TraceInvalid(N_("hub {hub!r} did not forward this message (its record says {verdict})"), hub=rec.hub,
                               verdict=rec.verdict)
        if nxt not in neighbours(rec.hub) or f"hub:{nxt}" not in rec.targets:
            raise TraceInvalid(N_("the trace goes from {hub!r} to {nxt!r}: not a route of the topology"), hub=rec.hub,
                               nxt=nxt)
        routed = set(routed_to(rec, f"hub:{nxt}"))
        if allowed is not None and not routed <= allowed:
            raise TraceInvalid(N_("hub {hub!r} routes recipients the hub before it did not route to it"), hub=rec.hub)
        allowed = routed
    return tuple(sorted(allowed or ()))


def _split(token: str) -> tuple[str, str, str | None]:
    """(JSON, signature, path to the batch root or None) of a token: ``<JSON>.<signature>`` or
    ``<JSON>.<signature>.<path>`` (:mod:`broker.core.sealing`).  The JSON ends at the token's
    last ``}``: base64url has none.  ValueError if it is neither."""
    end = token.rfind("}") + 1
    parts = token[end:].split(".")
    if end == 0 or parts[0] or len(parts) not in (2, 3):
        raise ValueError("a hop record is <JSON>.<signature>[.<path>]")
    return token[:end], parts[1], parts[2] if len(parts) == 3 else None


@functools.lru_cache(maxsize=256)
def parse_record(token: str) -> HopRecord:
    """A record token's fields (not its signature: :func:`verify_record`).  A hop reads a record
    two or three times (the entry time, the trace check, the routing), so the last few hundred
    are remembered; a record is immutable, and a malformed one is not remembered."""
    try:
        payload, _sig, _path = _split(token)
        d = json.loads(payload)
        d["targets"], d["recipients"] = tuple(d["targets"]), tuple(d["recipients"])
        return HopRecord(**d)
    except (ValueError, TypeError, KeyError) as exc:
        raise TraceInvalid(N_("a hop record is malformed: {reason}"), reason=exc) from None


def verify_record(token: str, cert: x509.Certificate, roots: sealing.VerifiedRoots | None = None) -> HopRecord:
    """Check one record's signature with the hub certificate ``cert``: over the record, or over
    the root of its batch that the record's path leads to (a root in ``roots`` is not verified
    again; one verified here is added to it)."""
    try:
        payload, sig_text, path = _split(token)
        sig = _unb64u(sig_text)
        signed = payload.encode()
        seen: tuple[x509.Certificate, bytes, bytes] | None = None
        if path is not None:
            root = sealing.root_of(signed, _unb64u(path))
            seen = (cert, root, sig)
            if roots is not None and seen in roots:
                return parse_record(token)
            signed = sealing.signed_bytes(root)
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, signed, _ECDSA_SHA256)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signed, padding.PKCS1v15(), _SHA256)
        else:
            raise TraceInvalid(N_("hub key type not supported"))
    except (InvalidSignature, ValueError):
        raise TraceInvalid(N_("a hop record's signature does not verify")) from None
    if seen is not None and roots is not None:
        roots.add(seen)
    return parse_record(token)


def hub_certificate(hub_certs: Mapping[str, x509.Certificate], hub: str, trust: TrustStore) -> x509.Certificate:
    """Hub ``hub``'s certificate, judged now by ``trust`` (chain, validity, revocation; the answer
    is remembered by the snapshot): ``TRACE_INVALID`` for a hub the topology does not know,
    ``HUB_REVOKED`` for one whose certificate does not pass."""
    cert = hub_certs.get(hub)
    if cert is None:
        raise TraceInvalid(N_("hop record from unknown hub {hub!r}"), hub=hub)
    try:
        trust.validate(cert)
    except CertificateError as exc:
        raise HubRevoked(N_("the certificate of hub {hub} is not valid now ({cause})"), hub=hub,
                         cause=f"{exc.code}: {exc.message}") from None
    return cert


def verify_trace(tokens: Sequence[str], hub_certs: Mapping[str, x509.Certificate], digest: str,
                 *, trust: TrustStore, signatures: str = "all",
                 roots: sealing.VerifiedRoots | None = None) -> list[HopRecord]:
    """Verify a trace: records chained in order, all about these bytes, each signed by its hub,
    whose certificate ``trust`` accepts now (:func:`hub_certificate`).

    Every hub, recipient and auditor checks every signature (the default): trusting that the
    neighbour checked the rest would let one dishonest hub write records in other hubs' names.
    ``signatures="last"`` remains only to measure what the full check costs (bench/).
    """
    records: list[HopRecord] = []
    prev = ""
    for i, token in enumerate(tokens):
        rec = parse_record(token)
        cert = hub_certificate(hub_certs, rec.hub, trust)
        if signatures == "all" or i == len(tokens) - 1:
            verify_record(token, cert, roots)
        if rec.digest != digest:
            raise TraceInvalid(N_("hop record of {hub!r} speaks of other bytes"), hub=rec.hub)
        if rec.prev != prev:
            raise TraceInvalid(N_("hop record of {hub!r} is out of order"), hub=rec.hub)
        records.append(rec)
        prev = token_digest(token)
    return records


def trace_of(headers: Mapping[str, Any]) -> list[str]:
    """The ``lt-trace`` header: a list of hop record tokens (absent: an empty trace)."""
    trace = headers.get(H_TRACE)
    if trace is None:
        return []
    if not isinstance(trace, list) or not all(isinstance(t, str | bytes) for t in trace):
        raise TraceInvalid(N_("the {header} header is not a list of signed hop records"), header=H_TRACE)
    return [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in trace]
