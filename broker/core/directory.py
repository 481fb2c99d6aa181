"""The directory: what every hub of the network must agree on, one document with a version, signed by
a directory authority.  Pure: reading and checking bytes, no file or network.

It holds the hub tree (each hub's id, name, parent, tier and its broker's public AMQP URLs), the
agencies (code, name, hub, level, parent, old codes, certificate pins, ``legacy_sha1``), the
settings every hub shares, and each hub's certificate.  What is local to one hub (its broker's
admin account, its keys, its tuning) stays in that hub's own settings.

The signed file (``lienthong-directory/1``) is a JSON object::

    {"format": "lienthong-directory/1",
     "payload": "<base64 of the canonical JSON of the directory>",
     "signature": "<base64 of the authority's signature over those bytes, SHA-256>",
     "certificates": ["<base64 DER of the signer's certificate>", "<its chain>", ...]}

The payload is canonical JSON (sorted keys, no spaces, UTF-8): ``version``, ``issued`` (UTC),
``namespace``, ``hubs``, ``agencies``, ``settings`` (the shared ones only:
:data:`broker.core.deployment.SHARED`), ``hub_certificates`` (hub id -> base64 DER).
Hubs keep and pass on the signed file exactly as received.

Who may sign: a certificate that chains to a trusted root *and* whose SHA-256 fingerprint the hub's
own settings name (``authorities``), as X-Road's security servers hold their configuration
anchor.  Named locally rather than by an extended key usage or a policy OID of our own, because
the government CA issues standard signing certificates; a hub's operator decides whom it takes
its directory from, and a new authority is one more fingerprint beside the old during a handover.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from broker.core import deployment
from broker.core.errors import (
    ConfigError,
    DirectoryInvalid,
    DirectorySignature,
    DirectorySigner,
    DirectoryTooLarge,
    LienthongError,
)
from broker.core.signer import SigningKey
from broker.core.topology import Topology, subject_uid
from broker.core.trust import TrustStore, fingerprint
from broker.core.wire import message_id
from broker.i18n import N_

FORMAT = "lienthong-directory/1"
MAX_BYTES = 32 * 1024 * 1024
"""Largest signed directory a hub reads (the 2019 shape, 12,500 agencies, is about 4 MB)."""
_TOP = ("version", "issued", "namespace", "hubs", "agencies", "settings", "hub_certificates")


@dataclass(frozen=True, eq=False)
class Directory:
    """A directory a hub checked: its version, what it says, and the signed bytes as received."""

    version: int
    issued: str
    topology: Topology
    hub_certificates: Mapping[str, x509.Certificate]
    signer: x509.Certificate
    signed: bytes
    """The signed file, kept and passed on unchanged."""
    digest: str
    """SHA-256 of the signed file (its id on the wire and in the store)."""


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def payload_of(source: Mapping[str, Any], *, version: int, issued: datetime,
               hub_certificates: Mapping[str, x509.Certificate]) -> bytes:
    """The canonical payload of version ``version`` of the directory ``source`` (a topology's shape:
    ``hubs``, ``agencies``, ``settings``, ``namespace``), checked as a topology first."""
    Topology.from_dict(dict(source), source="the directory's source")
    body = {"version": int(version), "issued": issued.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "namespace": str(source.get("namespace", "lienthong")),
            "hubs": [_with_broker(h, source) for h in source["hubs"]], "agencies": list(source["agencies"]),
            "settings": deployment.shared_part(source.get("settings")),
            "hub_certificates": {h: base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                                 for h, c in sorted(hub_certificates.items())}}
    return canonical(body)


def _with_broker(hub: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """A hub's entry with its broker's URLs written in: a source file may give them once for all
    its hubs (top-level ``amqp_url``, ``management_url``), and the directory carries only hubs,
    so a hub that applies it must not fall back to the default broker."""
    out = dict(hub)
    for key in ("amqp_url", "management_url"):
        if key not in out and source.get(key):
            out[key] = source[key]
    return out


def sign(payload: bytes, key: SigningKey) -> bytes:
    """The signed directory file of ``payload``, signed by the authority's ``key``."""
    if isinstance(key.key, ec.EllipticCurvePrivateKey):
        signature = key.key.sign(payload, ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    return json.dumps({"format": FORMAT, "payload": base64.b64encode(payload).decode(),
                       "signature": base64.b64encode(signature).decode(),
                       "certificates": [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                                        for c in (key.cert, *key.chain)]}, indent=1).encode() + b"\n"


def read(signed: bytes, *, trust: TrustStore, authorities: Collection[str],
         max_bytes: int = MAX_BYTES) -> Directory:
    """Check a signed directory and return what it says.  In this order, nothing used before it is
    checked: its size; its form; the signature over the payload with the certificate it names; that
    certificate's chain to a trusted root and its validity now; the fingerprint among ``authorities``;
    then the payload as a topology (one root, no cycle, agencies on known hubs) and each hub's
    certificate (valid, bound to its hub)."""
    if len(signed) > max_bytes:
        raise DirectoryTooLarge(N_("the directory is {size} bytes; a hub reads at most {limit}"), size=len(signed),
                                limit=max_bytes)
    try:
        outer = json.loads(signed)
        if not isinstance(outer, dict) or outer.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        payload = base64.b64decode(outer["payload"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
        certs = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in outer["certificates"]]
        if not certs:
            raise ValueError("it names no signer's certificate")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DirectorySignature(N_("the directory is not a signed directory: {reason}"), reason=str(exc)) from None
    signer = certs[0]
    _verify(signer, payload, signature)
    try:
        trust.validate(signer, tuple(certs[1:]))
    except LienthongError as exc:
        raise DirectorySigner(N_("the directory's signer is not trusted: {reason}"), reason=exc.message) from None
    if fingerprint(signer) not in {a.lower().replace(":", "") for a in authorities}:
        raise DirectorySigner(N_("{signer} may not sign directories here: its fingerprint is not among this hub's "
                                 "directory authorities"), signer=signer.subject.rfc4514_string())
    return _open(payload, signed, signer, trust)


def _verify(cert: x509.Certificate, payload: bytes, signature: bytes) -> None:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise DirectorySignature(N_("the directory's signer has a key type lienthong does not accept"))
    except InvalidSignature:
        raise DirectorySignature(N_("the directory's signature does not match its content")) from None


def _open(payload: bytes, signed: bytes, signer: x509.Certificate, trust: TrustStore) -> Directory:
    try:
        body = json.loads(payload)
        if not isinstance(body, dict) or sorted(body) != sorted(_TOP):
            raise ValueError(f"a directory holds exactly {', '.join(_TOP)}")
        version = body["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"version {version!r} is not a positive whole number")
        topology = Topology.from_dict({k: body[k] for k in ("hubs", "agencies", "settings", "namespace")},
                                      source=f"directory version {version}")
        certs = {str(h): x509.load_der_x509_certificate(base64.b64decode(c, validate=True))
                 for h, c in dict(body["hub_certificates"]).items()}
    except ConfigError as exc:
        raise DirectoryInvalid(N_("the directory is not a valid topology: {reason}"), reason=exc.message) from None
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise DirectoryInvalid(N_("the directory's content is not valid: {reason}"), reason=str(exc)) from None
    if set(certs) != set(topology.hubs):
        raise DirectoryInvalid(N_("the directory's hub certificates are not exactly one per hub"))
    for hub, cert in certs.items():
        if subject_uid(cert) != f"hub:{hub}":
            raise DirectoryInvalid(N_("the certificate given for hub {hub!r} is not that hub's"), hub=hub)
    return Directory(version, str(body["issued"]), topology, certs, signer, signed, message_id(signed))


@dataclass(frozen=True)
class Changes:
    """What one directory changes from another, by code and hub id."""

    hubs_added: tuple[str, ...] = ()
    hubs_removed: tuple[str, ...] = ()
    hubs_moved: tuple[str, ...] = ()
    """Hubs whose parent or broker changed."""
    agencies_added: tuple[str, ...] = ()
    agencies_removed: tuple[str, ...] = ()
    agencies_moved: tuple[tuple[str, str, str], ...] = ()
    """(code, hub before, hub now)."""
    agencies_changed: tuple[str, ...] = ()
    """Agencies whose name, pins, ``legacy_sha1``, level, parent or old codes changed."""

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in self.__dataclass_fields__)


def changes(old: Topology | None, new: Topology) -> Changes:
    """What ``new`` changes from ``old`` (everything is added when there is no ``old``)."""
    before_hubs = old.hubs if old is not None else {}
    before = old.agencies if old is not None else {}
    return Changes(
        hubs_added=tuple(sorted(set(new.hubs) - set(before_hubs))),
        hubs_removed=tuple(sorted(set(before_hubs) - set(new.hubs))),
        hubs_moved=tuple(sorted(h for h in set(new.hubs) & set(before_hubs)
                                if (new.hubs[h].parent, new.hubs[h].amqp_url)
                                != (before_hubs[h].parent, before_hubs[h].amqp_url))),
        agencies_added=tuple(sorted(set(new.agencies) - set(before))),
        agencies_removed=tuple(sorted(set(before) - set(new.agencies))),
        agencies_moved=tuple(sorted((a, before[a].hub, new.agencies[a].hub) for a in set(new.agencies) & set(before)
                                    if before[a].hub != new.agencies[a].hub)),
        agencies_changed=tuple(sorted(a for a in set(new.agencies) & set(before)
                                      if before[a].hub == new.agencies[a].hub and before[a] != new.agencies[a])))
