"""A PKI shaped like the government CA's, for tests: the current generation (root "RootCA chuyên
dùng Chính phủ G2", RSA-4096, SHA-256) published as the CA publishes it (DER files), and the
older G1 generation (RSA-2048) whose certificates are signed with SHA-1.

cryptography no longer signs certificates with SHA-1, so :func:`resign_sha1` makes one the way an
old CA did: the same to-be-signed certificate with the sha1WithRSAEncryption algorithm, signed
with the issuer's RSA key over SHA-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from broker.relay import devpki

G2_NAME = "RootCA chuyên dùng Chính phủ G2"
G1_NAME = "RootCA chuyên dùng Chính phủ"
_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")  # AlgorithmIdentifier sha256WithRSAEncryption
_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")    # ... sha1WithRSAEncryption (same length)


def resign_sha1(issued: devpki.Issued, issuer_key: rsa.RSAPrivateKey) -> devpki.Issued:
    """``issued``'s certificate signed again by ``issuer_key`` with SHA-1 (RSA PKCS#1 v1.5)."""
    cert = issued.cert
    der, tbs = cert.public_bytes(Encoding.DER), cert.tbs_certificate_bytes
    assert tbs.count(_SHA256_RSA) == 1 and der.count(_SHA256_RSA) == 2, "an RSA/SHA-256 certificate"
    new_tbs = tbs.replace(_SHA256_RSA, _SHA1_RSA)
    signature = issuer_key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())
    assert len(signature) == len(cert.signature)
    new = der.replace(tbs, new_tbs).replace(_SHA256_RSA, _SHA1_RSA).replace(cert.signature, signature)
    out = x509.load_der_x509_certificate(new)
    assert out.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA1
    return devpki.Issued(issued.key, out)


def rsa_key(issued: devpki.Issued) -> rsa.RSAPrivateKey:
    assert isinstance(issued.key, rsa.RSAPrivateKey)
    return issued.key


@dataclass(frozen=True)
class GovPki:
    """A trust store directory holding both generations, and their CAs to issue from."""

    directory: Path
    g2: devpki.Issued
    """The G2 root: RSA-4096, SHA-256; its certificate and CRL are DER files."""
    ca: devpki.Issued
    """A subordinate CA under G2 (a DER file too, with a PEM CRL)."""
    g1: devpki.Issued
    """The G1 root: RSA-2048, its own self-signature with SHA-1."""

    def agency(self, organ_id: str, *, issuer: str = "ca", sha1: bool = False) -> devpki.Issued:
        """An agency's RSA-2048 signing certificate from ``issuer`` ("ca", "g2" or "g1"), signed with
        SHA-1 when ``sha1``."""
        ca = {"ca": self.ca, "g2": self.g2, "g1": self.g1}[issuer]
        leaf = devpki.issue(ca, f"agency {organ_id}", uid=organ_id)
        return resign_sha1(leaf, rsa_key(ca)) if sha1 else leaf


def make(directory: Path) -> GovPki:
    """Both generations in ``directory``: each CA's certificate and CRL, in the forms CAs publish."""
    directory.mkdir(parents=True, exist_ok=True)
    g2 = devpki.make_root(G2_NAME, kind="rsa", bits=4096)
    ca = devpki.issue(g2, "CA phục vụ các cơ quan Đảng, Nhà nước", kind="rsa", ca_cert=True)
    g1 = devpki.make_root(G1_NAME, kind="rsa")
    g1 = resign_sha1(g1, rsa_key(g1))
    (directory / "RootCA-G2.cer").write_bytes(g2.cert.public_bytes(Encoding.DER))
    (directory / "RootCA-G2.crl").write_bytes(devpki.make_crl(g2).public_bytes(Encoding.DER))
    (directory / "CA-G2.der").write_bytes(ca.cert.public_bytes(Encoding.DER))
    (directory / "CA-G2.crl").write_bytes(devpki.make_crl(ca).public_bytes(Encoding.PEM))
    (directory / "RootCA-G1.crt").write_bytes(g1.cert.public_bytes(Encoding.PEM))
    (directory / "RootCA-G1.crl").write_bytes(devpki.make_crl(g1).public_bytes(Encoding.DER))
    return GovPki(directory, g2, ca, g1)
