"""XMLDSig algorithm identifiers (W3C URIs) and what lienthong accepts.

Keyed by URI so that parsing a ``SignedInfo`` is a dictionary lookup.
SHA-1 variants are known (to give a precise error) but refused unless a
policy sets ``allow_sha1`` for legacy senders.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import hashes

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
DS = "{" + DS_NS + "}"
EXC_C14N_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"


class KeyKind(StrEnum):
    RSA = "rsa"
    ECDSA = "ecdsa"


@dataclass(frozen=True)
class C14N:
    """A canonicalization method as lxml needs it."""

    uri: str
    exclusive: bool
    with_comments: bool


C14N_METHODS: dict[str, C14N] = {
    c.uri: c
    for c in (
        C14N("http://www.w3.org/TR/2001/REC-xml-c14n-20010315", False, False),
        C14N("http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments", False, True),
        # C14N 1.1 differs from 1.0 only in xml:id/xml:base inheritance, which
        # edXML does not use; lxml implements 1.0 (signxml does the same).
        C14N("http://www.w3.org/2006/12/xml-c14n11", False, False),
        C14N("http://www.w3.org/2006/12/xml-c14n11#WithComments", False, True),
        C14N("http://www.w3.org/2001/10/xml-exc-c14n#", True, False),
        C14N("http://www.w3.org/2001/10/xml-exc-c14n#WithComments", True, True),
    )
}
EXC_C14N = C14N_METHODS["http://www.w3.org/2001/10/xml-exc-c14n#"]
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"


@dataclass(frozen=True)
class Digest:
    uri: str
    name: str
    weak: bool


DIGESTS: dict[str, Digest] = {
    d.uri: d
    for d in (
        Digest("http://www.w3.org/2000/09/xmldsig#sha1", "sha1", True),
        Digest("http://www.w3.org/2001/04/xmlenc#sha256", "sha256", False),
        Digest("http://www.w3.org/2001/04/xmldsig-more#sha384", "sha384", False),
        Digest("http://www.w3.org/2001/04/xmlenc#sha512", "sha512", False),
    )
}
SHA256 = DIGESTS["http://www.w3.org/2001/04/xmlenc#sha256"]


@dataclass(frozen=True)
class SignatureMethod:
    uri: str
    key: KeyKind
    hash_name: str
    weak: bool

    def hash(self) -> hashes.HashAlgorithm:
        return _HASHES[self.hash_name]()


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

SIGNATURE_METHODS: dict[str, SignatureMethod] = {
    m.uri: m
    for m in (
        SignatureMethod("http://www.w3.org/2000/09/xmldsig#rsa-sha1", KeyKind.RSA, "sha1", True),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", KeyKind.RSA, "sha256", False),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#rsa-sha384", KeyKind.RSA, "sha384", False),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#rsa-sha512", KeyKind.RSA, "sha512", False),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1", KeyKind.ECDSA, "sha1", True),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256", KeyKind.ECDSA, "sha256", False),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384", KeyKind.ECDSA, "sha384", False),
        SignatureMethod("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512", KeyKind.ECDSA, "sha512", False),
    )
}
RSA_SHA256 = SIGNATURE_METHODS["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"]
ECDSA_SHA256 = SIGNATURE_METHODS["http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"]

