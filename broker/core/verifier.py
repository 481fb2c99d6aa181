"""XMLDSig verification of edXML messages under the lienthong profile.

Order of checks (cheapest and most specific first):

1. profile: exactly one ``ds:Signature`` in the whole document, a child of
   ``edXMLHeader``; one ``Reference`` with ``URI=""`` and only the
   enveloped-signature and C14N transforms; no ``Object``.  Because the
   single reference covers the whole document, what policy and routing read
   from the tree is what was signed: signature wrapping has nowhere to hide.
2. algorithms: known URIs; SHA-1 only when the policy allows it (for this sender: the agency
   directory's ``legacy_sha1``, see :func:`broker.core.validation.check`), and then named in
   :attr:`VerifiedSignature.legacy`.
3. digest of the canonical document, then the signature over ``SignedInfo``
   with the key of the first ``X509Certificate``.
4. the certificate path to a pinned anchor (:mod:`broker.trust`).

Results agree with signxml and xmlsec1 on every test input
(``tests/test_signatures.py``), at a fraction of their cost: the tree is
parsed once and canonicalized once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from lxml import etree

from broker.core.algorithms import (
    C14N,
    C14N_METHODS,
    DIGESTS,
    DS,
    ENVELOPED,
    EXC_C14N_NS,
    SIGNATURE_METHODS,
    Digest,
    KeyKind,
    SignatureMethod,
)
from broker.core.bounded import SIGNERS, Bounded
from broker.core.canon import canonicalize, enveloped_octets
from broker.core.edxml import header_of
from broker.core.errors import DigestMismatch, SignatureError, SignatureMissing, SignatureProfile, WeakAlgorithm
from broker.core.parsing import Children, children, text_of
from broker.core.trust import ChainResult, TrustStore
from broker.i18n import N_

MAX_KEYINFO_CERTS = 8
"""The signer and its intermediates: more is an attempt to make path building expensive."""


@dataclass(frozen=True)
class VerifyPolicy:
    """What a verifier accepts. Safe defaults; loosen only with a reason."""

    allow_sha1: bool = False
    """Accept SHA-1 from a legacy sender: RSA-SHA1 / ECDSA-SHA1 signatures, SHA-1 digests, and
    certificates of the chain signed with SHA-1 (``legacy_sha1`` in the sender's directory entry;
    ``verify --allow-sha1``).  What used it is named in ``VerifiedSignature.legacy``."""


DEFAULT_POLICY = VerifyPolicy()


@dataclass(frozen=True)
class VerifiedSignature:
    """What was verified: forward this, not what was received."""

    signer: x509.Certificate
    chain: ChainResult
    signature_method: str
    digest_method: str
    reference_digest: bytes
    legacy: tuple[str, ...] = ()
    """What was accepted only because the policy allows SHA-1 (empty: nothing weak)."""


@dataclass(frozen=True)
class _Parsed:
    signature: etree._Element
    signed_info: etree._Element
    c14n: C14N
    c14n_prefixes: tuple[str, ...]
    method: SignatureMethod
    digest: Digest
    ref_c14n: C14N
    ref_prefixes: tuple[str, ...]
    digest_value: bytes
    signature_value: bytes
    certs: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]


_CERTS: Bounded[str, tuple[bytes, x509.Certificate]] = Bounded(SIGNERS)


def _load_cert(el: etree._Element) -> tuple[bytes, x509.Certificate]:
    """An ``X509Certificate`` element's DER bytes and certificate, remembered by its text for the
    signers a hub meets, every agency at the national hub (decoding and hashing the DER each time
    cost more than the lookup)."""
    text = text_of(el)
    known = _CERTS.get(text)
    if known is None:
        der = _b64(el, "X509Certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise SignatureProfile(N_("an X509Certificate in KeyInfo is not a valid certificate")) from None
        known = _CERTS.put(text, (der, cert))
    return known


def _only(kids: Children, parent: etree._Element, name: str) -> etree._Element:
    """The one ``name`` child of ``parent`` (its children ``kids``, :func:`children`)."""
    found = kids.get(DS + name, ())
    if len(found) != 1:
        raise SignatureProfile(N_("{parent} must contain exactly one {name}, found {n}"), parent=_local(parent),
                               name=name, n=len(found))
    return found[0]


def _local(el: etree._Element) -> str:
    return str(el.tag).rpartition("}")[2]


def _b64(el: etree._Element, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text_of(el).split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureProfile(N_("{what} is not valid base64"), what=what) from None


def _prefixes(el: etree._Element) -> tuple[str, ...]:
    inc = next(el.iterchildren(_INCLUSIVE), None)
    return tuple((inc.get("PrefixList") or "").split()) if inc is not None else ()


_INCLUSIVE = "{" + EXC_C14N_NS + "}InclusiveNamespaces"


def _c14n(el: etree._Element) -> C14N:
    uri = el.get("Algorithm", "")
    try:
        return C14N_METHODS[uri]
    except KeyError:
        raise WeakAlgorithm(N_("canonicalization {uri!r} is not accepted"), uri=uri) from None


def _parse_signature(root: etree._Element, policy: VerifyPolicy,
                     parent: etree._Element | None) -> _Parsed:
    signatures = list(root.iter(DS + "Signature"))
    if not signatures:
        raise SignatureMissing(N_("the message is not signed (no XMLDSig Signature element)"))
    if len(signatures) > 1:
        raise SignatureProfile(N_("the message carries {n} signatures; exactly one is allowed"), n=len(signatures))
    sig = signatures[0]
    if sig.getparent() is not (header_of(root) if parent is None else parent):
        raise SignatureProfile(N_("the Signature must be a direct child of edXMLHeader (or of a receipt root)"))
    # one walk over the children of each element of the signature, then lookups
    in_sig = children(sig)
    for tag in in_sig:
        if tag not in _IN_SIGNATURE:
            raise SignatureProfile(N_("unexpected {element} inside Signature"), element=_local(in_sig[tag][0]))
    si = _only(in_sig, sig, "SignedInfo")
    in_si = children(si)
    cm = _only(in_si, si, "CanonicalizationMethod")
    c14n = _c14n(cm)
    sm_uri = _only(in_si, si, "SignatureMethod").get("Algorithm", "")
    method = SIGNATURE_METHODS.get(sm_uri)
    if method is None:
        raise WeakAlgorithm(N_("signature method {uri!r} is not accepted"), uri=sm_uri)
    refs = in_si.get(DS + "Reference", ())
    if len(refs) != 1:
        raise SignatureProfile(N_("SignedInfo must hold exactly one Reference, found {n}"), n=len(refs))
    ref = refs[0]
    if ref.get("URI") != "":
        raise SignatureProfile(N_('the Reference must cover the whole document (URI="")'))
    in_ref = children(ref)
    transforms_el = in_ref.get(DS + "Transforms")
    transforms = [t for t in transforms_el[0] if isinstance(t.tag, str)] if transforms_el else []
    uris = [t.get("Algorithm", "") for t in transforms]
    if not uris or uris[0] != ENVELOPED or len(uris) > 2:
        raise SignatureProfile(N_("the Reference must use the enveloped-signature transform, optionally followed by "
                                  "one canonicalization"))
    ref_c14n = C14N_METHODS["http://www.w3.org/TR/2001/REC-xml-c14n-20010315"]
    ref_prefixes: tuple[str, ...] = ()
    if len(uris) == 2:
        ref_c14n = _c14n(transforms[1])
        ref_prefixes = _prefixes(transforms[1])
    dm_uri = _only(in_ref, ref, "DigestMethod").get("Algorithm", "")
    digest = DIGESTS.get(dm_uri)
    if digest is None:
        raise WeakAlgorithm(N_("digest method {uri!r} is not accepted"), uri=dm_uri)
    if (digest.weak or method.weak) and not policy.allow_sha1:
        raise WeakAlgorithm(N_("SHA-1 is refused for this sender; sign with SHA-256 or stronger"))
    certs_els = [c for info in in_sig.get(DS + "KeyInfo", ()) for data in info.iterchildren(DS + "X509Data")
                 for c in data.iterchildren(DS + "X509Certificate")]
    if not certs_els:
        raise SignatureProfile(N_("KeyInfo carries no X509Certificate"))
    if len(certs_els) > MAX_KEYINFO_CERTS:
        raise SignatureProfile(N_("KeyInfo carries {n} certificates; at most {most} (the signer and its "
                                  "intermediates) are accepted"), n=len(certs_els), most=MAX_KEYINFO_CERTS)
    loaded = [_load_cert(c) for c in certs_els]
    ders, certs = tuple(d for d, _ in loaded), tuple(c for _, c in loaded)
    return _Parsed(sig, si, c14n, _prefixes(cm), method, digest, ref_c14n, ref_prefixes,
                   _b64(_only(in_ref, ref, "DigestValue"), "DigestValue"),
                   _b64(_only(in_sig, sig, "SignatureValue"), "SignatureValue"), certs, ders)


_IN_SIGNATURE = frozenset({DS + "SignedInfo", DS + "SignatureValue", DS + "KeyInfo"})


def _verify_value(cert: x509.Certificate, method: SignatureMethod, value: bytes, data: bytes) -> None:
    key = cert.public_key()
    try:
        if method.key is KeyKind.RSA:
            if not isinstance(key, rsa.RSAPublicKey):
                raise SignatureError(N_("the signature method does not match the certificate's key type"))
            key.verify(value, data, padding.PKCS1v15(), method.hash())
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise SignatureError(N_("the signature method does not match the certificate's key type"))
            size = (key.curve.key_size + 7) // 8
            if len(value) != 2 * size:
                raise SignatureError(N_("the ECDSA signature value has the wrong length"))
            der = utils.encode_dss_signature(int.from_bytes(value[:size], "big"),
                                             int.from_bytes(value[size:], "big"))
            key.verify(der, data, ec.ECDSA(method.hash()))
    except InvalidSignature:
        raise SignatureError(N_("the signature value does not verify with the signer's key")) from None


def verify_tree(tree: etree._ElementTree, trust: TrustStore | None, *,
                policy: VerifyPolicy = DEFAULT_POLICY, at: datetime | None = None,
                parent: etree._Element | None = None) -> VerifiedSignature:
    """Verify the enveloped signature of a parsed message.

    With ``trust=None`` only the cryptography is checked (for tests);
    hubs always pass their trust store.  ``parent`` is where the signature
    must sit (default: the edXML header; receipts sign their root).
    """
    p = _parse_signature(tree.getroot(), policy, parent)
    octets = enveloped_octets(tree, p.signature, p.ref_c14n, p.ref_prefixes)
    if not hmac.compare_digest(hashlib.new(p.digest.name, octets).digest(), p.digest_value):
        raise DigestMismatch(N_("the document was modified after it was signed (digest mismatch)"))
    _verify_value(p.certs[0], p.method, p.signature_value, canonicalize(p.signed_info, p.c14n, p.c14n_prefixes))
    if trust is None:
        chain = ChainResult(path=p.certs, valid_until=p.certs[0].not_valid_after_utc)
    else:
        chain = trust.validate(p.certs[0], p.certs[1:], at=at, cache_key=b"".join(p.ders),
                               allow_sha1=policy.allow_sha1)
    legacy = ((f"signature method {p.method.uri}",) if p.method.weak else ()) + \
        ((f"digest method {p.digest.uri}",) if p.digest.weak else ()) + chain.legacy
    return VerifiedSignature(signer=p.certs[0], chain=chain, signature_method=p.method.uri,
                             digest_method=p.digest.uri, reference_digest=p.digest_value, legacy=legacy)
