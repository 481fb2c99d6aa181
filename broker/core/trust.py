"""Trust store and certificate path validation: anchors, chains, validity, CRLs, key usage.

A trust store is an immutable snapshot of a directory: the certificates and CRLs its CAs publish,
PEM or DER (``broker.core.cafiles``), read once by :meth:`TrustStore.load`.  Self-signed CA
certificates are the anchors; other CA certificates are intermediates offered for path building.
No default CA bundle, ever.  A running hub or recipient sees the directory change through
:class:`broker.relay.livetrust.LiveTrust`, which makes a new snapshot when a file changes.

SHA-1: a certificate of the path signed with SHA-1 (the older generation of the government CA,
and its USB tokens) is refused with ``CERT_ALGORITHM`` unless the caller allows it for this
sender (``allow_sha1``, from the agency's ``legacy_sha1`` in the directory); the anchor's own
self-signature does not count.  An accepted path names what used SHA-1 (``ChainResult.legacy``).

Path rules (RFC 5280, the parts a document signer needs): every issuer is a CA allowed to sign
certificates, within its ``pathLenConstraint``; the signer is not a CA, may sign (key usage) and,
when it names extended key usages, names one fit for documents.  KeyInfo carries at most a few
certificates (``broker.core.verifier``), issuers are matched by name before any signature is
verified, and refusals are cached, so a bad chain costs little and costs it once.

Path results are remembered per leaf certificate (DER digest) for the instants the answer holds
for: from the latest ``notBefore`` of the path to the next instant at which it could change (a
``notAfter``, a CRL's or OCSP answer's end, a revocation date the snapshot knows of that lies
after the instant judged), so a hub pays for chain validation once per signer and snapshot;
refusals are remembered too (for ``FAILURE_SECONDS``, for the instant judged and later ones), so a
sender of bad chains cannot make each message pay for path building again.  What is remembered
only saves work: it never changes an answer.

A CRL counts for a certificate only within its scope: a CRL whose issuing distribution point
says it holds only CA (or only end-entity) certificates, or names a distribution point, speaks
only for the certificates it covers (RFC 5280, 6.3.3).  CRLs lienthong cannot read whole (delta
CRLs, indirect or reason-partitioned ones) never get this far (:func:`broker.core.cafiles.unsupported`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import SignatureAlgorithmOID

from broker.core.bounded import SIGNERS, Bounded
from broker.core.cafiles import is_ca, read_directory
from broker.core.deployment import Revocation
from broker.core.errors import (
    CertAlgorithm,
    ConfigError,
    Expired,
    KeyUsage,
    RevocationUnknown,
    Revoked,
    Untrusted,
)
from broker.i18n import N_

MAX_CHAIN = 6
FAILURE_SECONDS = 300.0
_DER = Encoding.DER
_SHA1_SIGNATURES = {SignatureAlgorithmOID.RSA_WITH_SHA1, SignatureAlgorithmOID.ECDSA_WITH_SHA1}
DOCUMENT_SIGNING_EKUS = {
    "2.5.29.37.0",               # anyExtendedKeyUsage
    "1.3.6.1.5.5.7.3.4",         # emailProtection (S/MIME, the usual "signature" certificate)
    "1.3.6.1.5.5.7.3.2",         # clientAuth (USB-token certificates of Vietnamese CAs carry it)
    "1.3.6.1.5.5.7.3.36",        # documentSigning (RFC 9336)
    "1.3.6.1.4.1.311.10.3.12",   # Microsoft document signing
    "1.2.840.113583.1.1.5",      # Adobe PDF signing
}
"""Extended key usages that make a certificate fit to sign documents.  A certificate with no EKU
extension is not restricted; one that names only others (a TLS server, code signing, OCSP,
time-stamping) is refused."""


def now() -> datetime:
    return datetime.now(UTC)


_DERS: Bounded[x509.Certificate, bytes] = Bounded(SIGNERS)


def der_of(cert: x509.Certificate) -> bytes:
    """``cert``'s DER bytes, remembered for the few thousand certificates a hub meets (hub
    certificates are judged at every record; serializing one costs three times hashing it)."""
    der = _DERS.get(cert)
    if der is None:
        der = _DERS.put(cert, cert.public_bytes(_DER))
    return der


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(_DER)).hexdigest()


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


@dataclass(frozen=True)
class RevocationPolicy:
    """How long a CRL counts (``settings.revocation`` in the topology)."""

    grace: timedelta = timedelta(0)
    """How long past its nextUpdate an overdue CRL still counts (0: refuse at once).  Without a
    grace, a CA that is late publishing stops every hub; with one, hubs go on and alert."""
    max_crl_age: timedelta = timedelta(days=7)
    """How long after it was issued a CRL without nextUpdate counts (never forever)."""

    @classmethod
    def of(cls, settings: Revocation) -> RevocationPolicy:
        return cls(grace=timedelta(hours=settings.grace_hours), max_crl_age=timedelta(days=settings.max_crl_age_days))

    def good_until(self, crl: x509.CertificateRevocationList) -> datetime:
        """The last instant ``crl`` speaks for."""
        due = crl.next_update_utc
        return (due + self.grace) if due is not None else crl.last_update_utc + self.max_crl_age


@dataclass(frozen=True)
class StatusAnswer:
    """A revocation status from outside the trust store (an OCSP responder)."""

    revoked_at: datetime | None
    """When the certificate was revoked; None: it is good."""
    good_until: datetime
    """The last instant the answer speaks for."""


class StatusSource(Protocol):
    """Asks someone else whether a certificate is revoked (``broker.relay.revocation.OcspClient``);
    the core only consults it, so it stays free of the network."""

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> StatusAnswer | None: ...


class TrustSource(Protocol):
    """Where the trust store in force comes from: a fixed :class:`TrustStore` (it is its own
    source), or one that follows its directory (:class:`broker.relay.livetrust.LiveTrust`)."""

    def current(self) -> TrustStore: ...


@dataclass(frozen=True)
class ChainResult:
    """A validated certification path, leaf first, anchor last."""

    path: tuple[x509.Certificate, ...]
    valid_until: datetime
    """The first instant at which this answer may no longer hold: a certificate's end, the end of
    what its revocation status was read from, or a revocation date later than the instant judged."""
    legacy: tuple[str, ...] = ()
    """What in the path is signed with SHA-1 (accepted only when the caller allowed it)."""
    valid_from: datetime = datetime.min.replace(tzinfo=UTC)
    """The first instant this answer holds for (the latest ``notBefore`` of the path)."""


@dataclass(frozen=True, eq=False)
class TrustStore:
    """Pinned anchors, intermediates and CRLs: one snapshot, never changed."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    require_crl: bool = True
    """When true, a certificate whose issuer has no current CRL is refused (CRL_UNAVAILABLE)."""
    policy: RevocationPolicy = field(default_factory=lambda: RevocationPolicy())
    status_source: StatusSource | None = None
    """Asked (OCSP) when no current CRL speaks for a certificate."""
    _paths: Bounded[bytes, ChainResult] = field(default_factory=lambda: Bounded(SIGNERS), init=False, repr=False)
    """Validated paths, remembered (work saved, never an answer changed)."""
    _refused: Bounded[bytes, tuple[float, datetime, Exception]] = field(default_factory=lambda: Bounded(SIGNERS),
                                                                        init=False, repr=False)
    """Refusals, remembered until a monotonic time, for the instant judged and later ones."""
    _anchor_ders: frozenset[bytes] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_anchor_ders", frozenset(a.public_bytes(_DER) for a in self.anchors))

    @classmethod
    def load(cls, directory: str | Path, *, require_crl: bool = True,
             policy: RevocationPolicy | None = None, crl_cache: Path | None = None,
             status_source: StatusSource | None = None) -> TrustStore:
        """The snapshot of ``directory`` (and of the fetched CRLs in ``crl_cache``) as it is now."""
        anchors, inter, crls = read_directory(directory)
        if not anchors:
            raise ConfigError(N_("trust store {directory} holds no self-signed CA certificate (anchor)"),
                              directory=directory)
        if crl_cache is not None and crl_cache.is_dir():
            crls += read_directory(crl_cache)[2]
        return cls(anchors=tuple(anchors), intermediates=tuple(inter), crls=tuple(crls), require_crl=require_crl,
                   policy=policy or RevocationPolicy(), status_source=status_source)

    def current(self) -> TrustStore:
        """A fixed snapshot is its own :class:`TrustSource`."""
        return self

    def with_material(self, intermediates: list[x509.Certificate],
                      crls: list[x509.CertificateRevocationList]) -> TrustStore:
        """This store's anchors, with more intermediates and CRLs to build and check paths with (a
        bundle's, say).  Neither can add trust: an intermediate counts only if it chains to one of
        these anchors, a CRL only if its issuer signed it."""
        return TrustStore(anchors=self.anchors, intermediates=(*self.intermediates, *intermediates),
                          crls=(*self.crls, *crls), require_crl=self.require_crl, policy=self.policy)

    def check_revocation(self, cert: x509.Certificate, issuer: x509.Certificate, *,
                         at: datetime | None = None) -> None:
        """Raise :class:`Revoked` or :class:`RevocationUnknown` unless ``issuer``'s current CRL (or
        status source) clears ``cert`` at ``at``: for a path built elsewhere (a TLS client's)."""
        self._check_revocation(cert, issuer, at or now())

    # -- path validation -----------------------------------------------------

    def validate(self, leaf: x509.Certificate, extra: tuple[x509.Certificate, ...] = (),
                 *, at: datetime | None = None, cache_key: bytes | None = None,
                 allow_sha1: bool = False) -> ChainResult:
        """Validate ``leaf`` for document signing at time ``at`` (default: now).

        ``cache_key`` identifies leaf and extras (their DER bytes) when the caller has them.
        ``allow_sha1``: certificates signed with SHA-1 may be part of the path (a legacy sender's).
        """
        right_now = now()
        at = at or right_now
        # whether SHA-1 is allowed is part of the question: an answer for a legacy sender must
        # never serve another one
        key = cache_key or (der_of(leaf) if not extra else b"".join(der_of(c) for c in (leaf, *extra)))
        key = (b"sha1:" if allow_sha1 else b"-:") + key
        current = abs((at - right_now).total_seconds()) < 60  # refusals are cached for "now" only
        hit = self._paths.get(key)
        failed = self._refused.get(key) if current else None
        if hit is not None and hit.valid_from <= at < hit.valid_until:
            return hit
        if failed is not None and failed[0] > time.monotonic() and at >= failed[1]:
            raise failed[2]
        try:
            result = self._validate(leaf, extra, at, allow_sha1)
        except (Untrusted, CertAlgorithm, KeyUsage, Expired, Revoked, RevocationUnknown) as exc:
            if not current:
                raise
            self._refused.put(key, (time.monotonic() + FAILURE_SECONDS, at, exc))
            raise
        return self._paths.put(key, result)

    def _validate(self, leaf: x509.Certificate, extra: tuple[x509.Certificate, ...],
                  at: datetime, allow_sha1: bool) -> ChainResult:
        path = [leaf]
        candidates = [*extra, *self.intermediates]
        legacy: list[str] = []
        while path[-1].public_bytes(_DER) not in self._anchor_ders:
            current = path[-1]
            if len(path) > MAX_CHAIN:
                raise Untrusted(N_("the certificate chain is too long"))
            issuer = self._find_issuer(current, candidates, allow_sha1)
            if issuer is None:
                raise Untrusted(N_("certificate {cert!r} does not chain to a trusted root"), cert=_label(current))
            if current.signature_algorithm_oid in _SHA1_SIGNATURES:
                legacy.append(f"certificate {_label(current)!r} is signed with SHA-1")
            if not is_ca(issuer):
                raise Untrusted(N_("issuer {issuer!r} is not a CA"), issuer=_label(issuer))
            _check_issuer(issuer, cas_below=len(path) - 1)
            path.append(issuer)
        _check_signer(leaf, at)
        valid_until = min(c.not_valid_after_utc for c in path)
        for cert in path:
            if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
                raise Expired(N_("certificate {cert!r} is valid from {start:%Y-%m-%d} to {end:%Y-%m-%d}, not at "
                                 "{at:%Y-%m-%d %H:%M}"), cert=_label(cert), start=cert.not_valid_before_utc,
                              end=cert.not_valid_after_utc, at=at)
        for cert, issuer in zip(path, path[1:], strict=False):
            next_update = self._check_revocation(cert, issuer, at)
            if next_update is not None:
                valid_until = min(valid_until, next_update)
        return ChainResult(path=tuple(path), valid_until=valid_until, legacy=tuple(legacy),
                           valid_from=max(c.not_valid_before_utc for c in path))

    def _find_issuer(self, cert: x509.Certificate, candidates: list[x509.Certificate],
                     allow_sha1: bool) -> x509.Certificate | None:
        sha1 = cert.signature_algorithm_oid in _SHA1_SIGNATURES
        for issuer in [*self.anchors, *candidates]:
            if issuer.subject != cert.issuer:
                continue
            if sha1 and not allow_sha1:
                raise CertAlgorithm(N_("certificate {cert!r} is signed with SHA-1, which is accepted only from "
                                       "agencies the directory marks legacy_sha1; use a SHA-256 certificate"),
                                    cert=_label(cert))
            try:
                if sha1:
                    _verify_sha1(cert, issuer)  # cryptography's own check no longer takes SHA-1
                else:
                    cert.verify_directly_issued_by(issuer)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return issuer
        return None

    def _check_revocation(self, cert: x509.Certificate, issuer: x509.Certificate,
                          at: datetime) -> datetime | None:
        """Raise unless ``cert`` is cleared at ``at``; return the first instant the clearance may
        end (None: nothing speaks for it and none is required)."""
        key = issuer.public_key()
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise Untrusted(N_("issuer {issuer!r} has a key type lienthong does not accept"), issuer=_label(issuer))
        crls = [c for c in self.crls if c.issuer == issuer.subject and covers(c, cert) and c.is_signature_valid(key)]
        # A CRL speaks for every instant up to its nextUpdate (one with no nextUpdate, for
        # policy.max_crl_age after it was issued); one issued after ``at`` is still good evidence
        # for ``at`` (auditors check old messages against newer CRLs).  Past its due date, the
        # policy may accept it for a grace period (the hub raises a crl-out-of-date alert).
        current = [c for c in crls if at <= self.policy.good_until(c)]
        if not current:
            answer = self.status_source.status(cert, issuer) if self.status_source is not None else None
            if answer is not None:
                if answer.revoked_at is not None and answer.revoked_at <= at:
                    raise Revoked(N_("certificate {cert!r} was revoked on {day:%Y-%m-%d} (OCSP)"), cert=_label(cert),
                                  day=answer.revoked_at)
                return min(answer.good_until, answer.revoked_at or answer.good_until)
            if self.require_crl:
                raise RevocationUnknown(N_("no current CRL from {issuer!r} in the trust store"), issuer=_label(issuer))
            return None
        crl = max(current, key=lambda c: c.last_update_utc)  # the newest knows the most
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and entry.revocation_date_utc <= at:
            raise Revoked(N_("certificate {cert!r} was revoked on {day:%Y-%m-%d}"), cert=_label(cert),
                          day=entry.revocation_date_utc)
        if entry is not None:  # revoked after ``at``: good for ``at``, not from its revocation on
            return min(self.policy.good_until(crl), entry.revocation_date_utc)
        return self.policy.good_until(crl)


def covers(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    """Whether ``crl`` speaks for ``cert``: always, unless its issuing distribution point narrows
    it to CA or to end-entity certificates, or to a distribution point ``cert`` does not name."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return True
    if (idp.only_contains_ca_certs and not is_ca(cert)) or (idp.only_contains_user_certs and is_ca(cert)):
        return False
    if idp.full_name is None:
        return True
    points = _extension(cert, x509.CRLDistributionPoints)
    if not isinstance(points, x509.CRLDistributionPoints):
        return False  # a partitioned CRL, and the certificate names no partition
    return bool({n for p in points for n in p.full_name or ()} & set(idp.full_name))


def _verify_sha1(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Raise InvalidSignature unless ``issuer`` signed ``cert`` (RSA PKCS#1 v1.5 or ECDSA, SHA-1)."""
    key, oid = issuer.public_key(), cert.signature_algorithm_oid
    if isinstance(key, rsa.RSAPublicKey) and oid == SignatureAlgorithmOID.RSA_WITH_SHA1:
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())
    elif isinstance(key, ec.EllipticCurvePublicKey) and oid == SignatureAlgorithmOID.ECDSA_WITH_SHA1:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
    else:
        raise InvalidSignature("the issuer's key does not fit the certificate's signature algorithm")


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_signer(cert: x509.Certificate, at: datetime) -> None:
    """The signer itself: not a CA, allowed to sign, fit for documents, valid at ``at``."""
    if is_ca(cert):
        raise KeyUsage(N_("certificate {cert!r} is a CA certificate: a CA does not sign documents"), cert=_label(cert))
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not (ku.digital_signature or ku.content_commitment):
        raise KeyUsage(N_("certificate {cert!r} is not allowed to sign (key usage)"), cert=_label(cert))
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage) and not {o.dotted_string for o in eku} & DOCUMENT_SIGNING_EKUS:
        raise KeyUsage(N_("certificate {cert!r} is for other uses ({uses}), not for signing documents"),
                       cert=_label(cert), uses=', '.join(o._name for o in eku))
    if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
        raise Expired(N_("certificate {cert!r} is valid from {start:%Y-%m-%d} to {end:%Y-%m-%d}, not at {at:%Y-%m-%d "
                         "%H:%M}"), cert=_label(cert), start=cert.not_valid_before_utc, end=cert.not_valid_after_utc,
                      at=at)


def _check_issuer(issuer: x509.Certificate, *, cas_below: int) -> None:
    """An issuer may sign certificates (key usage) and has no more CAs below it than its
    ``pathLenConstraint`` allows (``cas_below``: the intermediate CAs between it and the signer)."""
    ku = _extension(issuer, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        raise Untrusted(N_("issuer {issuer!r} is not allowed to sign certificates (key usage)"), issuer=_label(issuer))
    bc = _extension(issuer, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.path_length is not None and cas_below > bc.path_length:
        raise Untrusted(N_("issuer {issuer!r} allows {path_length} CA(s) below it (path length), this chain has "
                           "{cas_below}"), issuer=_label(issuer), path_length=bc.path_length, cas_below=cas_below)
