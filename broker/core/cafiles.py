"""What certificate authorities publish, read from a trust store directory: certificates and CRLs.

Every top-level ``*.pem`` / ``*.crt`` / ``*.cer`` / ``*.der`` / ``*.crl`` file counts, in either
form a CA publishes it: PEM (any number of certificates and CRLs; a private-key block beside them
is ignored, never loaded) or DER (one certificate or one CRL: the government CA's root and its CRLs
come so).
The content says which, not the name: a ``.crt`` may be PEM, a ``.der`` a CRL.  A file that holds
neither is a configuration error naming it, and so is a CRL lienthong cannot read whole
(:func:`unsupported`: a delta CRL, an indirect or reason-partitioned one): used as a full CRL it
would clear certificates it does not speak for.

:func:`name_hash` names files the way OpenSSL's and Erlang's hashed directories look them up
(``<hash>.r0`` for a CRL): RabbitMQ reads the transport CA's CRL so.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography import x509

from broker.core.errors import ConfigError
from broker.i18n import N_

SUFFIXES = (".pem", ".crt", ".cer", ".der", ".crl")
"""The files of a trust store directory (read, and watched for changes)."""


def der(tag: int, content: bytes) -> bytes:
    """One DER element: ``tag``, the length of ``content``, ``content``."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def der_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER in DER."""
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = b""
    for arc in (40 * first + second, *rest):
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return der(0x06, out)


def name_hash(name: x509.Name) -> str:
    """OpenSSL's subject-name hash (``openssl x509 -hash``, Erlang's ``openssl_name_hash``): SHA-1
    of the name's canonical form (each string value as UTF8String, trimmed, inner whitespace runs
    made one space, ASCII letters lowered; the RDN sets without the outer sequence), its first
    four bytes read little-endian, in hex."""
    canon = b""
    for rdn in name.rdns:
        items = []
        for attr in rdn:
            if not isinstance(attr.value, str):
                raise ConfigError(N_("the name {name!r} has a value that is not a string"), name=name.rfc4514_string())
            text = re.sub(r"[ \t\n\v\f\r]+", " ", attr.value.strip(" \t\n\v\f\r"))
            text = re.sub(r"[A-Z]+", lambda m: m.group().lower(), text)
            items.append(der(0x30, der_oid(attr.oid.dotted_string) + der(0x0C, text.encode())))
        canon += der(0x31, b"".join(sorted(items)))
    return f"{int.from_bytes(hashlib.sha1(canon).digest()[:4], 'little'):08x}"


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


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


def read_directory(directory: str | Path) -> tuple[list[x509.Certificate], list[x509.Certificate],
                                                   list[x509.CertificateRevocationList]]:
    """(self-signed CA certificates, other CA certificates, CRLs) of a directory's files."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(N_("trust store {directory} is not a directory"), directory=d)
    anchors: list[x509.Certificate] = []
    inter: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    for f in sorted(d.iterdir()):
        if f.suffix.lower() not in SUFFIXES or not f.is_file():
            continue
        certs, found = read_file(f)
        crls += found
        for cert in certs:
            if is_ca(cert):
                (anchors if cert.issuer == cert.subject else inter).append(cert)
    return anchors, inter, crls


def unsupported(crl: x509.CertificateRevocationList) -> str | None:
    """Why ``crl`` cannot be used as a complete list of its issuer's revocations, or None.

    A delta CRL lists only what changed since a base CRL; an indirect CRL speaks for other issuers'
    certificates; one limited to some revocation reasons, or to attribute certificates, is not
    the whole story; a critical extension lienthong does not know may change the meaning of all
    of it.  A CRL whose issuing distribution point only narrows its scope (CA or end-entity
    certificates, one distribution point) is read: it counts for what it covers
    (:func:`broker.core.trust.covers`)."""
    for ext in crl.extensions:
        value = ext.value
        if isinstance(value, x509.DeltaCRLIndicator):
            return "it is a delta CRL (lienthong needs the full CRL it completes)"
        if isinstance(value, x509.IssuingDistributionPoint):
            if value.indirect_crl:
                return "it is an indirect CRL (it lists certificates of other issuers)"
            if value.only_some_reasons:
                return "it lists only some revocation reasons"
            if value.only_contains_attribute_certs:
                return "it lists only attribute certificates"
            if value.relative_name is not None:
                return "its issuing distribution point is a relative name"
        elif ext.critical:
            return f"it has a critical extension lienthong does not know ({ext.oid.dotted_string})"
    return None


def read_file(f: Path) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    """The certificates and CRLs of one trust store file, PEM or DER, whatever its name says; a
    file that holds neither, or a CRL lienthong cannot use (:func:`unsupported`), is a ConfigError
    naming it."""
    certs, crls = _read_file(f)
    for crl in crls:
        if (why := unsupported(crl)) is not None:
            raise ConfigError(N_("trust store file {file} holds a CRL lienthong cannot use: {why}"), file=f.name,
                              why=why)
    return certs, crls


def _read_file(f: Path) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    try:
        data = f.read_bytes()
    except OSError as exc:
        raise ConfigError(N_("cannot read trust store file {name}: {reason}"), name=f.name,
                          reason=exc.strerror) from None
    if b"-----BEGIN " in data:
        try:
            certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN CERTIFICATE-----" in data else []
            crls = [x509.load_pem_x509_crl(block) for block in _pem_blocks(data, b"X509 CRL")]
        except ValueError as exc:
            raise ConfigError(N_("trust store file {name} is not valid PEM: {reason}"), name=f.name,
                              reason=exc) from None
        if not certs and not crls:
            raise ConfigError(N_("trust store file {name} holds no certificate and no CRL"), name=f.name)
        return certs, crls
    try:
        return [x509.load_der_x509_certificate(data)], []
    except ValueError:
        pass
    try:
        return [], [x509.load_der_x509_crl(data)]
    except ValueError:
        raise ConfigError(N_("trust store file {name} is neither a certificate nor a CRL (PEM or DER)"),
                          name=f.name) from None


def stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a trust store file is written, added or removed: names, sizes, times."""
    try:
        return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir()
                            if f.is_file() and f.suffix.lower() in SUFFIXES))
    except OSError:
        return ()
