"""Trust store and certificate path validation: anchors, chains, validity, CRLs, key usage.

A trust store is a directory that lienthong reads once: every top-level
``*.pem`` / ``*.crt`` / ``*.crl`` file, each holding any number of
certificates and CRLs (private-key blocks are ignored, never loaded).
Self-signed CA certificates are the anchors; other CA certificates are
intermediates offered for path building.  No default CA bundle, ever.

Path results are cached per leaf certificate (DER digest) until the next
instant at which the answer could change (a ``notAfter``, a CRL's
``nextUpdate``), so a hub pays for chain validation once per signer.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from broker.core.errors import ConfigError, Expired, KeyUsage, RevocationUnknown, Revoked, Untrusted

MAX_CHAIN = 6
_DER = Encoding.DER


def now() -> datetime:
    return datetime.now(UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(_DER)).hexdigest()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


@dataclass(frozen=True)
class ChainResult:
    """A validated certification path, leaf first, anchor last."""

    path: tuple[x509.Certificate, ...]
    valid_until: datetime
    """The first instant at which this answer may no longer hold."""


@dataclass
class TrustStore:
    """Pinned anchors, intermediates and CRLs, loaded from one directory."""

    anchors: list[x509.Certificate]
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    require_crl: bool = True
    """When true, a certificate whose issuer has no current CRL is refused (CRL_UNAVAILABLE)."""

    def __post_init__(self) -> None:
        self._cache: dict[bytes, ChainResult] = {}
        self._lock = threading.Lock()
        self._anchor_ders = {a.public_bytes(_DER) for a in self.anchors}

    @classmethod
    def load(cls, directory: str | Path, *, require_crl: bool = True) -> TrustStore:
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError(f"trust store {d} is not a directory")
        anchors: list[x509.Certificate] = []
        inter: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in (".pem", ".crt", ".crl") or not f.is_file():
                continue
            data = f.read_bytes()
            try:
                if b"-----BEGIN CERTIFICATE-----" in data:
                    for cert in x509.load_pem_x509_certificates(data):
                        if not _is_ca(cert):
                            continue
                        (anchors if cert.issuer == cert.subject else inter).append(cert)
                for block in _pem_blocks(data, b"X509 CRL"):
                    crls.append(x509.load_pem_x509_crl(block))
            except ValueError as exc:
                raise ConfigError(f"trust store file {f.name} is not valid PEM: {exc}") from None
        if not anchors:
            raise ConfigError(f"trust store {d} holds no self-signed CA certificate (anchor)")
        return cls(anchors=anchors, intermediates=inter, crls=crls, require_crl=require_crl)

    # -- path validation -----------------------------------------------------

    def validate(self, leaf: x509.Certificate, extra: tuple[x509.Certificate, ...] = (),
                 *, at: datetime | None = None, cache_key: bytes | None = None) -> ChainResult:
        """Validate ``leaf`` for document signing at time ``at`` (default: now).

        ``cache_key`` identifies leaf and extras (their DER bytes) when the caller has them.
        """
        at = at or now()
        key = cache_key or b"".join(c.public_bytes(_DER) for c in (leaf, *extra))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit.path[0].not_valid_before_utc <= at < hit.valid_until:
            return hit
        result = self._validate(leaf, extra, at)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = result
        return result

    def _validate(self, leaf: x509.Certificate, extra: tuple[x509.Certificate, ...],
                  at: datetime) -> ChainResult:
        path = [leaf]
        candidates = list(extra) + self.intermediates
        while path[-1].public_bytes(_DER) not in self._anchor_ders:
            current = path[-1]
            if len(path) > MAX_CHAIN:
                raise Untrusted("the certificate chain is too long")
            issuer = self._find_issuer(current, candidates)
            if issuer is None:
                raise Untrusted(f"certificate {_label(current)!r} does not chain to a trusted root")
            if not _is_ca(issuer):
                raise Untrusted(f"issuer {_label(issuer)!r} is not a CA")
            path.append(issuer)
        _check_signing_usage(leaf)
        valid_until = min(c.not_valid_after_utc for c in path)
        for cert in path:
            if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
                raise Expired(f"certificate {_label(cert)!r} is valid from "
                              f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
                              f"not at {at:%Y-%m-%d %H:%M}")
        for cert, issuer in zip(path, path[1:], strict=False):
            next_update = self._check_revocation(cert, issuer, at)
            if next_update is not None:
                valid_until = min(valid_until, next_update)
        return ChainResult(path=tuple(path), valid_until=valid_until)

    def _find_issuer(self, cert: x509.Certificate,
                     candidates: list[x509.Certificate]) -> x509.Certificate | None:
        for issuer in [*self.anchors, *candidates]:
            if issuer.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return issuer
        return None

    def _check_revocation(self, cert: x509.Certificate, issuer: x509.Certificate,
                          at: datetime) -> datetime | None:
        key = issuer.public_key()
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise Untrusted(f"issuer {_label(issuer)!r} has a key type lienthong does not accept")
        crls = [c for c in self.crls if c.issuer == issuer.subject and c.is_signature_valid(key)]
        # A CRL speaks for every instant up to its nextUpdate; one issued after ``at`` is
        # still good evidence for ``at`` (auditors check old messages against newer CRLs).
        current = [c for c in crls if c.next_update_utc is None or at <= c.next_update_utc]
        if not current:
            if self.require_crl:
                raise RevocationUnknown(f"no current CRL from {_label(issuer)!r} in the trust store")
            return None
        crl = max(current, key=lambda c: c.last_update_utc)  # the newest knows the most
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and entry.revocation_date_utc <= at:
            raise Revoked(f"certificate {_label(cert)!r} was revoked on {entry.revocation_date_utc:%Y-%m-%d}")
        return crl.next_update_utc


def _check_signing_usage(cert: x509.Certificate) -> None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # RFC 5280: no keyUsage extension means no restriction
    if not (ku.digital_signature or ku.content_commitment):
        raise KeyUsage(f"certificate {_label(cert)!r} is not allowed to sign (key usage)")


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    out, pos = [], 0
    while (i := data.find(begin, pos)) != -1:
        j = data.find(end, i)
        if j == -1:
            break
        out.append(data[i:j + len(end)] + b"\n")
        pos = j + len(end)
    return out

