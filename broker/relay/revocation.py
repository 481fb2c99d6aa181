"""Revocation data from where CAs publish it: CRLs fetched from their distribution points, and
an OCSP client for when no current CRL speaks for a certificate.

:class:`CrlFetcher` runs in a thread of its own (a hub's worker, a recipient's process, see
:func:`broker.relay.livetrust.revocation_trust`): every so often it downloads each CRL URL
(``settings.revocation.crl_urls`` in the topology, and the CRL distribution points named by the
trust store's own CA certificates), keeps a CRL only if a CA of the trust store signed it, it is
newer than the one kept and lienthong can use it whole (no delta, indirect or reason-partitioned
CRL), and writes it atomically into the trust store's CRL cache directory.  The trust store
re-reads that directory when a file in it changes (:class:`broker.relay.livetrust.LiveTrust`), so
the next message is judged with the new CRL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from broker.core.cafiles import unsupported
from broker.core.trust import StatusAnswer, TrustSource, TrustStore

MAX_CRL_BYTES = 20 * 1024 * 1024
log = structlog.get_logger("lienthong.revocation")


def distribution_points(certs: Sequence[x509.Certificate]) -> list[str]:
    """The http(s) URLs of the CRL distribution points these certificates name, in order, once each."""
    urls: list[str] = []
    for cert in certs:
        try:
            points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except x509.ExtensionNotFound:
            continue
        for point in points:
            for name in point.full_name or []:
                if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(("http://", "https://")):
                    if name.value not in urls:
                        urls.append(name.value)
    return urls


@dataclass
class FetchReport:
    fetched: list[str] = field(default_factory=list)
    """URLs whose CRL was newer than the one kept, and is now kept."""
    unchanged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(URL, why): unreachable, not a CRL, or not signed by a CA of the trust store."""


def fetch_crls(trust: TrustStore, cache: Path, urls: Sequence[str], *, timeout: float = 10.0,
               opener: Callable[..., Any] = urllib.request.urlopen) -> FetchReport:
    """Download each URL's CRL into ``cache`` (one file per URL) if a CA of ``trust`` signed it
    and it is newer than the one kept."""
    report = FetchReport()
    cache.mkdir(parents=True, exist_ok=True)
    cas = [*trust.anchors, *trust.intermediates]
    for url in urls:
        try:
            with opener(url, timeout=timeout) as resp:
                data = resp.read(MAX_CRL_BYTES + 1)
        except OSError as exc:
            report.refused.append((url, f"unreachable: {exc}"))
            continue
        if len(data) > MAX_CRL_BYTES:
            report.refused.append((url, "larger than 20 MiB"))
            continue
        try:
            crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        except ValueError:
            report.refused.append((url, "not a CRL"))
            continue
        if not any(ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
                   for ca in cas):
            report.refused.append((url, "not signed by a CA of the trust store"))
            continue
        if (why := unsupported(crl)) is not None:
            report.refused.append((url, f"a CRL lienthong cannot use: {why}"))
            continue
        path = cache / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".crl")
        if path.exists():
            kept = x509.load_pem_x509_crl(path.read_bytes())
            if kept.last_update_utc >= crl.last_update_utc:
                report.unchanged.append(url)
                continue
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(crl.public_bytes(Encoding.PEM))
        os.replace(tmp, path)
        report.fetched.append(url)
    return report


class CrlFetcher:
    """Fetch every ``every_seconds`` until ``stopped`` is set (a thread of the hub worker)."""

    def __init__(self, trust: TrustSource, cache: Path, configured: Sequence[str], every_seconds: float,
                 stopped: threading.Event) -> None:
        self.trust, self.cache, self.configured = trust, cache, list(configured)
        self.every, self.stopped = every_seconds, stopped

    def run(self) -> None:
        while True:
            trust = self.trust.current()
            urls = list(dict.fromkeys([*self.configured, *distribution_points([*trust.anchors, *trust.intermediates])]))
            if urls:
                report = fetch_crls(trust, self.cache, urls)
                for url, why in report.refused:
                    log.warning("alert", kind="crl-fetch-failed", subject=url, detail=why)
                if report.fetched:
                    log.info("CRLs fetched", urls=report.fetched)
            if self.stopped.wait(self.every):
                return


class OcspClient:
    """Asks an OCSP responder (``settings.revocation.ocsp_url``, else the certificate's own AIA
    OCSP URL) whether a certificate is revoked, when no current CRL speaks for it.

    An answer counts only if signed by the issuer, or by a responder the issuer delegated (EKU OCSP
    signing) within that responder's own validity period.  Each request carries a fresh nonce: a
    responder that echoes one must echo this one, and once a responder has echoed nonces its
    answers without one are not believed (an old answer replayed).  An answer is cached until its
    nextUpdate; one without nextUpdate counts for ``max_age`` after its thisUpdate
    (``settings.revocation.ocsp_max_age_seconds``)."""

    def __init__(self, url: str | None = None, *, timeout: float = 2.0, max_age: timedelta = timedelta(minutes=5),
                 opener: Callable[..., Any] = urllib.request.urlopen) -> None:
        self.url, self.timeout, self.max_age, self.opener = url, timeout, max_age, opener
        self._cache: dict[tuple[bytes, int], StatusAnswer] = {}
        self._lock = threading.Lock()
        self._nonces: set[str] = set()
        """Responders (URLs) seen echoing a nonce: from them, an answer without one is refused."""
        self.asked = 0
        """Requests sent (the rest came from the cache)."""

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> StatusAnswer | None:
        key = (issuer.public_bytes(Encoding.DER), cert.serial_number)
        now = datetime.now(UTC)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now <= hit.good_until:
            return hit
        url = self.url or _aia_ocsp_url(cert)
        if url is None:
            return None
        nonce = os.urandom(16)
        request = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
                   .add_extension(x509.OCSPNonce(nonce), critical=False).build())
        try:
            self.asked += 1
            req = urllib.request.Request(url, data=request.public_bytes(Encoding.DER), method="POST",
                                         headers={"Content-Type": "application/ocsp-request"})
            with self.opener(req, timeout=self.timeout) as resp:
                response = ocsp.load_der_ocsp_response(resp.read(1_000_000))
            echoed = _nonce(response)
            if echoed != nonce and (echoed is not None or url in self._nonces):
                raise ValueError("the answer does not carry the nonce of this request (an old answer replayed?)")
            answer = _judge(response, cert, issuer, now, self.max_age)
        except (OSError, ValueError) as exc:
            log.warning("alert", kind="ocsp-unavailable", subject=url, detail=str(exc))
            return None
        if answer is not None:
            with self._lock:
                self._cache[key] = answer
                if echoed is not None:  # a signed answer with our nonce: this responder supports them
                    self._nonces.add(url)
        return answer


def _nonce(response: ocsp.OCSPResponse) -> bytes | None:
    """The nonce a response echoes (None: none, or an unsuccessful response that has no fields)."""
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return None
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _aia_ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for d in aia:
        if d.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                d.access_location, x509.UniformResourceIdentifier):
            return d.access_location.value
    return None


def _judge(resp: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate,
           now: datetime, max_age: timedelta) -> StatusAnswer | None:
    """The answer of a response about ``cert``, or None if it says nothing trustworthy."""
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL or resp.serial_number != cert.serial_number:
        return None
    signer = issuer
    if resp.certificates:  # a delegated responder: issued by the issuer, for OCSP signing
        delegate = resp.certificates[0]
        try:
            delegate.verify_directly_issued_by(issuer)
            eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
            return None
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return None
        if not delegate.not_valid_before_utc <= now <= delegate.not_valid_after_utc:
            return None  # an expired (or not yet valid) responder vouches for nothing
        signer = delegate
    key = signer.public_key()
    algorithm = resp.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        else:
            return None
    except InvalidSignature:
        return None
    if resp.this_update_utc > now + timedelta(minutes=5):
        return None
    good_until = resp.next_update_utc or resp.this_update_utc + max_age
    if now > good_until:
        return None
    if resp.certificate_status == ocsp.OCSPCertStatus.GOOD:
        return StatusAnswer(None, good_until)
    if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED and resp.revocation_time_utc is not None:
        return StatusAnswer(resp.revocation_time_utc, good_until)
    return None
