"""Enveloped XMLDSig signing of edXML messages (the lienthong profile).

The profile, which :mod:`broker.verifier` enforces on every message:
one ``ds:Signature``, last child of ``edXMLHeader``; one ``Reference`` with
``URI=""`` (the whole document) and the transforms enveloped-signature then
exclusive C14N; SHA-256 or stronger; the signer's certificate (and any
intermediates) in ``KeyInfo/X509Data``.  The output is verified by signxml
and xmlsec1 alike (see ``tests/test_interop_xmlsec.py``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from lxml import etree

from broker.core.algorithms import (
    C14N,
    DS,
    DS_NS,
    ECDSA_SHA256,
    ENVELOPED,
    EXC_C14N,
    RSA_SHA256,
    SHA256,
    Digest,
    KeyKind,
    SignatureMethod,
)
from broker.core.canon import canonicalize
from broker.core.edxml import header_of
from broker.core.errors import ConfigError, SignatureProfile, UsageError
from broker.core.parsing import DEFAULT_LIMITS, ParseLimits, parse
from broker.i18n import N_

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A private key with its certificate and the intermediates to send along.

    ``key`` is any object implementing cryptography's ``RSAPrivateKey`` or
    ``EllipticCurvePrivateKey``: a key loaded from PEM, or one that stays on a PKCS#11 token
    (``broker.pkcs11``), whose ``sign`` goes to the token."""

    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def load(cls, key_path: str | Path, cert_path: str | Path) -> SigningKey:
        """Load a PEM private key and a PEM certificate file (leaf first, then intermediates)."""
        try:
            key_pem = Path(key_path).read_bytes()
        except OSError as exc:
            raise UsageError(N_("cannot read key or certificate: {reason}: {filename}"), reason=exc.strerror,
                             filename=exc.filename) from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as exc:
            raise ConfigError(N_("key or certificate is not valid PEM: {reason}"), reason=exc) from None
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise ConfigError(N_("only RSA and ECDSA keys can sign edXML"))
        return cls.with_certificate(key, read_certificates(cert_path))

    @classmethod
    def with_certificate(cls, key: PrivateKey, certs: list[x509.Certificate]) -> SigningKey:
        """``key`` with ``certs`` (leaf first, then intermediates), which must be its own."""
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise ConfigError(N_("the certificate does not belong to the private key"))
        return cls(key=key, cert=certs[0], chain=tuple(certs[1:]))

    @functools.cached_property
    def key_info(self) -> str:
        """``ds:KeyInfo`` with the certificate and the intermediates, serialized."""
        certs = "".join(f"<ds:X509Certificate>{base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()}"
                        "</ds:X509Certificate>" for c in (self.cert, *self.chain))
        return f"<ds:KeyInfo><ds:X509Data>{certs}</ds:X509Data></ds:KeyInfo>"

    @property
    def method(self) -> SignatureMethod:
        return RSA_SHA256 if isinstance(self.key, rsa.RSAPrivateKey) else ECDSA_SHA256


def read_certificates(cert_path: str | Path) -> list[x509.Certificate]:
    """A PEM certificate file: the signer's certificate, then any intermediates."""
    try:
        return x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
    except OSError as exc:
        raise UsageError(N_("cannot read key or certificate: {reason}: {filename}"), reason=exc.strerror,
                         filename=exc.filename) from None
    except ValueError as exc:
        raise ConfigError(N_("key or certificate is not valid PEM: {reason}"), reason=exc) from None


def sign_value(key: PrivateKey, method: SignatureMethod, data: bytes) -> bytes:
    """Raw XMLDSig SignatureValue bytes (ECDSA as r||s, not DER)."""
    if method.key is KeyKind.RSA:
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, padding.PKCS1v15(), method.hash())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(method.hash())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, DS + name, attrs)
    if text is not None:
        el.text = text
    return el


def sign_tree(tree: etree._ElementTree, key: SigningKey, *, digest: Digest = SHA256,
              c14n: C14N = EXC_C14N, parent: etree._Element | None = None) -> etree._Element:
    """Append an enveloped signature to ``tree`` in place; return the Signature element.

    The signature goes last into ``parent`` (default: the edXML header).
    """
    root = tree.getroot()
    if next(root.iter(DS + "Signature"), None) is not None:
        raise SignatureProfile(N_("the message is already signed; lienthong signs a message once"))
    header = header_of(root) if parent is None else parent
    # The digest covers the document as it is now, which is exactly what the
    # enveloped transform yields once the signature is inserted.
    no_comments = C14N(c14n.uri, c14n.exclusive, False)
    digest_value = hashlib.new(digest.name, canonicalize(tree, no_comments)).digest()

    signature = etree.SubElement(header, DS + "Signature", nsmap={"ds": DS_NS})
    signed_info = _sub(signature, "SignedInfo")
    _sub(signed_info, "CanonicalizationMethod", Algorithm=c14n.uri)
    _sub(signed_info, "SignatureMethod", Algorithm=key.method.uri)
    reference = _sub(signed_info, "Reference", URI="")
    transforms = _sub(reference, "Transforms")
    _sub(transforms, "Transform", Algorithm=ENVELOPED)
    _sub(transforms, "Transform", Algorithm=c14n.uri)
    _sub(reference, "DigestMethod", Algorithm=digest.uri)
    _sub(reference, "DigestValue", base64.b64encode(digest_value).decode())
    value = sign_value(key.key, key.method, canonicalize(signed_info, c14n))
    _sub(signature, "SignatureValue", base64.b64encode(value).decode())
    x509_data = _sub(_sub(signature, "KeyInfo"), "X509Data")
    for cert in (key.cert, *key.chain):
        der = cert.public_bytes(serialization.Encoding.DER)
        _sub(x509_data, "X509Certificate", base64.b64encode(der).decode())
    return signature


def enveloped_signature(canonical: bytes, key: SigningKey) -> bytes:
    """The ``ds:Signature`` element, serialized, that :func:`sign_tree` would append (SHA-256,
    exclusive C14N) to a document whose exclusive canonical form, without it, is ``canonical``.

    For documents lienthong writes itself (receipts), whose canonical form it writes directly:
    no tree to build and canonicalize twice.  SignedInfo is signed in the exclusive canonical form
    its text below has (the ``ds`` declaration on it, no other namespace used in it, empty
    elements written out); ``tests/test_interop_xmlsec.py`` holds the result to sign_tree's."""
    digest = base64.b64encode(hashlib.sha256(canonical).digest()).decode()
    algorithms = (("CanonicalizationMethod", EXC_C14N.uri), ("SignatureMethod", key.method.uri))
    transforms = (("Transform", ENVELOPED), ("Transform", EXC_C14N.uri))

    def signed_info(as_signed: bool) -> str:
        """As signed (canonical: its own ``ds`` declaration, empty elements written out), or as
        sent inside ``ds:Signature``."""
        def step(tag: str, uri: str) -> str:
            return f'<ds:{tag} Algorithm="{uri}"' + (f"></ds:{tag}>" if as_signed else "/>")
        declared = f' xmlns:ds="{DS_NS}"' if as_signed else ""
        return (f"<ds:SignedInfo{declared}>" + "".join(step(*a) for a in algorithms) + '<ds:Reference URI="">'
                + "<ds:Transforms>" + "".join(step(*t) for t in transforms) + "</ds:Transforms>"
                + step("DigestMethod", SHA256.uri) + f"<ds:DigestValue>{digest}</ds:DigestValue>"
                + "</ds:Reference></ds:SignedInfo>")

    value = sign_value(key.key, key.method, signed_info(as_signed=True).encode())
    return (f'<ds:Signature xmlns:ds="{DS_NS}">' + signed_info(as_signed=False)
            + f"<ds:SignatureValue>{base64.b64encode(value).decode()}</ds:SignatureValue>"
            + key.key_info + "</ds:Signature>").encode()


def sign(data: bytes, key: SigningKey, *, limits: ParseLimits = DEFAULT_LIMITS,
         digest: Digest = SHA256) -> bytes:
    """Sign edXML bytes; the message must be valid edXML (it is checked first)."""
    from broker.core import schema  # local import: schema loading is only needed here

    tree = parse(data, limits)
    schema.validate(tree.getroot())
    sign_tree(tree, key, digest=digest)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
