"""Client certificates of the gateway's mutual TLS, judged after the handshake: revocation, the
agency they name, and the directory's pins.

The handshake (``--client-ca``: a file, or a trust store directory, of CA certificates and their
CRLs) proves that the client holds the key of a certificate that chains to one of those CAs and is
within its validity.  For each request :meth:`ClientCertificates.agency_of` then checks what the
handshake does not:

- revocation: every certificate of the path against its issuer's current CRL, through a
  :class:`~broker.core.trust.TrustStore` of the same material (a directory is re-read when a file
  in it changes: drop a new CRL there and it counts at once);
- the agency: the subject's UID, an agency of the directory;
- pins: when the directory pins the agency's certificates (``cert_sha256``), this one must be one
  of them.

A client CA without a CRL is refused at start: revocation could never be checked.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from broker.core import errors
from broker.core.cafiles import is_ca, read_directory, read_file
from broker.core.topology import Topology, subject_uid
from broker.core.trust import MAX_CHAIN, TrustSource, TrustStore, fingerprint
from broker.i18n import N_
from broker.relay.livetrust import LiveTrust


def trust_of(source: Path) -> TrustSource:
    """The client CAs and their CRLs, from a trust store directory (followed: a new CRL dropped in
    counts at once) or one PEM file (read once)."""
    trust: TrustSource
    if source.is_dir():
        trust = LiveTrust(source)
    else:
        certs, crls = read_file(source)
        cas = [c for c in certs if is_ca(c)]
        anchors = [c for c in cas if c.issuer == c.subject]
        if not anchors:
            raise errors.ConfigError(N_("the client CA file {source} holds no self-signed CA certificate"),
                                     source=source)
        trust = TrustStore(anchors=tuple(anchors), intermediates=tuple(c for c in cas if c.issuer != c.subject),
                           crls=tuple(crls))
    now = trust.current()
    for ca in [*now.anchors, *now.intermediates]:
        if not any(crl.issuer == ca.subject for crl in now.crls):
            raise errors.ConfigError(N_("client CA {ca!r} ({source}) comes with no CRL: revocation could not be "
                                        "checked; put its CRL beside it"), ca=ca.subject.rfc4514_string(),
                                     source=source)
    return trust


def handshake_cas(source: Path) -> bytes:
    """The CA certificates of ``source`` as one PEM bundle, for the TLS server's verification."""
    if source.is_dir():
        anchors, intermediates, _crls = read_directory(source)
        certs = [*anchors, *intermediates]
    else:
        certs = [c for c in read_file(source)[0] if is_ca(c)]
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


class ClientCertificates:
    """Maps a verified client certificate to its agency, or refuses it (UNAUTHORIZED)."""

    def __init__(self, source: Path, topology: Topology) -> None:
        self.trust = trust_of(source)
        self.topology = topology

    def agency_of(self, cert: x509.Certificate) -> str:
        """The agency ``cert`` speaks for: not revoked, named by its UID, pinned where pins exist."""
        try:
            self._check_path(cert)
        except errors.LienthongError as exc:
            raise errors.Unauthorized(N_("the client certificate is not accepted: {reason}"), reason=exc) from None
        agency = subject_uid(cert)
        if agency is None or agency not in self.topology.agencies:
            raise errors.Unauthorized(N_("the client certificate names {agency!r}, not an agency of the directory"),
                                      agency=agency)
        pins = self.topology.agencies[agency].cert_sha256
        if pins and fingerprint(cert) not in pins:
            raise errors.Unauthorized(N_("the client certificate is not one the directory pins for agency {agency}"),
                                      agency=agency)
        return agency

    def _check_path(self, cert: x509.Certificate) -> None:
        trust = self.trust.current()
        anchors = {a.public_bytes(Encoding.DER) for a in trust.anchors}
        current = cert
        for _ in range(MAX_CHAIN):
            if current.public_bytes(Encoding.DER) in anchors:
                return
            issuer = self._issuer(trust, current)
            trust.check_revocation(current, issuer)
            current = issuer
        raise errors.Untrusted(N_("the certificate chain is too long"))

    def _issuer(self, trust: TrustStore, cert: x509.Certificate) -> x509.Certificate:
        for ca in [*trust.anchors, *trust.intermediates]:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return ca
        raise errors.Untrusted(N_("its issuer is not among the client CAs"))

