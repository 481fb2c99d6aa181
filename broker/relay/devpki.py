"""A development PKI: a root CA, hub and agency certificates, and a CRL.

FOR DEVELOPMENT AND TESTS ONLY.  Real deployments use certificates from the
government CA (Ban Cơ yếu Chính phủ) and put its roots and CRLs in the trust
store directory.  Layout written by :func:`init`::

    DIR/root-ca.pem               the trust anchor (the trust store is DIR itself)
    DIR/root-ca.crl.pem           the root's CRL
    DIR/ca/root-ca.key            the CA key (never in the trust store scan: subfolder)
    DIR/hubs/<hub>/key.pem, cert.pem                   signing key, hop records
    DIR/hubs/<hub>/amqp-{hub,link}-{key,cert}.pem      its two broker accounts (client certificates)
    DIR/agencies/<OrganId>/key.pem, cert.pem           signing key
    DIR/agencies/<OrganId>/amqp-{key,cert}.pem         its broker account
    TRANSPORT/ca.pem, ca.key                           the broker TLS CA (default DIR/transport)

A host gets its principal's directory, ``root-ca.pem``, the CRL and ``TRANSPORT/ca.pem``; the CA
keys stay where certificates are issued (``lienthong pki issue`` makes one principal's material).
Every key file is private from its creation.

Agency certificates carry the agency code in the subject's UID attribute,
which is how :func:`broker.topology.check_signer` binds signer to ``From``.
Agencies get RSA-2048 keys (what Vietnamese tokens issue; ``agency_keys="ec"``
gives them ECDSA P-256 keys instead, for directories of thousands of
agencies: an RSA key takes about 60 ms to make, 4 minutes for the nation's
4,145 agencies on one core, made on every core at once here); hubs get ECDSA
P-256 keys, which sign hop records fast.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.core import wire
from broker.core.signer import PrivateKey
from broker.core.topology import Topology
from broker.core.trust import fingerprint
from broker.i18n import N_
from broker.private import write_private
from broker.settings import PkiLayout

WARNING = N_("DEVELOPMENT PKI: these keys and certificates are for development and tests only.")
ORG = "lienthong dev PKI"


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    cert: x509.Certificate


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def new_key(kind: str = "rsa", bits: int = 2048) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(ec.SECP256R1())


def make_root(name: str = "lienthong dev root CA", *, days: int = 3650, kind: str = "ec",
              bits: int = 2048) -> Issued:
    """A self-signed root CA (``kind`` "rsa" with ``bits``, e.g. 4096 as the government CA's G2 root)."""
    key = new_key(kind, bits)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(key, cert)


def _rsa_der(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_keys(count: int, kind: str = "rsa") -> Iterator[PrivateKey]:
    """``count`` new keys; RSA keys are made on every core when there are many."""
    if kind != "rsa" or count < 32 or (os.cpu_count() or 1) < 2:
        yield from (new_key(kind) for _ in range(count))
        return
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for der in pool.map(_rsa_der, range(count), chunksize=16):
            key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
            assert isinstance(key, rsa.RSAPrivateKey)  # made just above, in the pool
            yield key


def issue(ca: Issued, common_name: str, *, uid: str | None = None, kind: str = "rsa",
          not_before: datetime | None = None, days: int = 825, ca_cert: bool = False,
          can_sign: bool = True, eku: Sequence[x509.ObjectIdentifier] = (), eku_critical: bool = False,
          key: PrivateKey | None = None) -> Issued:
    """Issue a certificate from ``ca``; ``uid`` carries the agency or hub code; ``eku`` names
    extended key usages (none: no extension, no restriction); ``key``: the subject's key (default:
    a new one of ``kind``).  A common name longer than X.509 allows (64 bytes of UTF-8: an
    agency's full name may be) is cut there; the code in ``uid`` is what identifies the subject."""
    key = key or new_key(kind)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
             x509.NameAttribute(NameOID.COMMON_NAME, common_name.encode()[:64].decode(errors="ignore"))]
    if uid:
        attrs.append(x509.NameAttribute(NameOID.USER_ID, uid))
    start = not_before or (_now() - timedelta(minutes=5))
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca_cert, path_length=0 if ca_cert else None),
                              critical=True)
               .add_extension(x509.KeyUsage(digital_signature=can_sign, content_commitment=can_sign,
                                            key_encipherment=not can_sign, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=ca_cert, crl_sign=ca_cert,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def make_crl(ca: Issued, revoked_serials: Iterable[int] | Mapping[int, datetime] = (), *, days: int = 30,
             last_update: datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL from ``ca`` listing ``revoked_serials``, valid ``days`` from ``last_update``; a
    mapping gives each serial its revocation date (else: ``last_update``)."""
    start = last_update or (_now() - timedelta(minutes=5))
    dates = revoked_serials if isinstance(revoked_serials, Mapping) else dict.fromkeys(revoked_serials, start)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(start).next_update(start + timedelta(days=days)))
    for serial, when in sorted(dates.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(when).build())
    return builder.sign(ca.key, hashes.SHA256())


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    if private:
        write_private(path, data, sync=False)  # a dev PKI is made again, not recovered
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_pair(paths: tuple[Path, Path], issued: Issued) -> None:
    """Write a key (private) and its certificate to (key path, certificate path)."""
    _write(paths[0], pem_key(issued.key), private=True)
    _write(paths[1], pem_cert(issued.cert))


def init(directory: str | Path, topology: Topology, transport: Path | None = None, *,
         agency_keys: str = "rsa") -> Path:
    """Create the whole dev PKI for ``topology`` in ``directory`` (which must be empty or absent).
    Broker accounts are issued by the transport CA in ``transport`` (made there if absent).
    Agencies' signing keys are ``agency_keys``: ``rsa`` (2048) or ``ec`` (P-256)."""
    d = Path(directory)
    keys = PkiLayout(d, transport)
    if d.exists() and any(p != keys.transport_ca for p in d.iterdir()):  # a transport CA made first may stay
        from broker.core.errors import UsageError

        raise UsageError(N_("{directory} is not empty; choose a new directory for the dev PKI"), directory=d)
    root = make_root()
    _write(keys.anchor, pem_cert(root.cert))
    _write(d / "ca" / "root-ca.key", pem_key(root.key), private=True)
    tca = transport_ca(keys.transport_ca)
    for hub in topology.hubs.values():
        issue_hub(keys, topology, hub.hub_id, root, tca)
    for agency, key in zip(topology.agencies.values(), new_keys(len(topology.agencies), agency_keys), strict=True):
        issue_agency(keys, topology, agency.organ_id, root, tca, key=key)
    issue_directory_authority(keys, root)
    write_crl(d, root, [])
    (d / "README.txt").write_text(WARNING + "\n", encoding="utf-8")
    return d


def issue_hub(keys: PkiLayout, topology: Topology, hub_id: str, root: Issued, tca: Issued) -> None:
    """One hub's material alone: its signing pair and its two broker accounts."""
    hub = topology.hubs[hub_id]
    write_pair(keys.hub(hub_id), issue(root, f"hub {hub.name}", uid=f"hub:{hub_id}", kind="ec"))
    names = wire.names(topology)
    write_pair(keys.hub_account(hub_id, "hub"), issue_account(tca, names.hub_user(hub_id)))
    write_pair(keys.hub_account(hub_id, "link"), issue_account(tca, names.link_user(hub_id)))


def issue_directory_authority(keys: PkiLayout, root: Issued) -> None:
    """The dev directory authority's signing pair, and the file naming it as the one authority whose
    directories the hubs of this PKI take (``PkiLayout.directory_authorities``)."""
    authority = issue(root, "directory authority", uid="directory:lienthong", kind="ec")
    write_pair(keys.directory_authority(), authority)
    text = f"# the dev directory authority (development only)\n{fingerprint(authority.cert)}\n"
    _write(keys.directory_authorities, text.encode())


def issue_agency(keys: PkiLayout, topology: Topology, organ_id: str, root: Issued, tca: Issued, *,
                 key: PrivateKey | None = None) -> None:
    """One agency's material alone: its signing pair (``key``, default a new RSA key) and its broker account."""
    write_pair(keys.agency(organ_id), issue(root, topology.agency(organ_id).name, uid=organ_id, key=key))
    write_pair(keys.agency_account(organ_id), issue_account(tca, wire.names(topology).agency_user(organ_id)))


def issue_one(src: PkiLayout, dest: PkiLayout, topology: Topology, kind: str, principal: str) -> Path:
    """One principal's material in ``dest`` (empty or absent), issued by the CAs of ``src``, with
    the public files a host needs beside it; no CA key goes to ``dest``."""
    _empty(dest, kind, principal)
    root, tca = load_root(src.root), transport_ca(src.transport_ca)
    (issue_hub if kind == "hub" else issue_agency)(dest, topology, principal, root, tca)
    own_cert = (dest.hub(principal) if kind == "hub" else dest.agency(principal))[1]
    _write((src.hub(principal) if kind == "hub" else src.agency(principal))[1], own_cert.read_bytes())
    _publics(src, dest, topology, principal)
    return dest.root


def export_one(src: PkiLayout, dest: PkiLayout, topology: Topology, kind: str, principal: str) -> Path:
    """One principal's existing material (from ``init``) copied alone into ``dest`` (empty or
    absent), keys private as they were, with the public files a host needs; no CA key, no other
    principal's key.  Unlike :func:`issue_one` nothing is issued anew, so hosts exported one after
    the other all hold every hub's current certificate."""
    _empty(dest, kind, principal)
    own = (src.hub(principal) if kind == "hub" else src.agency(principal))[0].parent
    if not own.is_dir():
        from broker.core.errors import UsageError

        raise UsageError(N_("{path} does not exist: no {kind} {principal} in this PKI"), path=own, kind=kind,
                         principal=principal)
    for f in sorted(own.iterdir()):
        _write(dest.root / f.relative_to(src.root), f.read_bytes(), private="key" in f.name)
    _publics(src, dest, topology, principal)
    return dest.root


def _empty(dest: PkiLayout, kind: str, principal: str) -> None:
    if dest.root.exists() and any(dest.root.iterdir()):
        from broker.core.errors import UsageError

        raise UsageError(N_("{root} is not empty; choose a new directory for {kind} {principal}'s material"),
                         root=dest.root, kind=kind, principal=principal)


def _publics(src: PkiLayout, dest: PkiLayout, topology: Topology, principal: str) -> None:
    """What every host reads: the anchor, the CRL, the hubs' certificates, the broker's CA."""
    for public in [src.anchor, src.root / "root-ca.crl.pem", *(src.hub(h)[1] for h in topology.hubs if h != principal)]:
        if public.exists():
            _write(dest.root / public.relative_to(src.root), public.read_bytes())
    _write(dest.broker_ca, src.broker_ca.read_bytes())


# -- transport: the broker's TLS certificates and the accounts' client certificates ----------------

def transport_ca(directory: Path) -> Issued:
    """The transport CA kept in ``directory`` (``ca.pem``, ``ca.key``), made there if absent."""
    if (directory / "ca.key").exists():
        return load_ca(directory / "ca.pem", directory / "ca.key")
    ca = make_root("lienthong transport CA")
    _write(directory / "ca.key", pem_key(ca.key), private=True)
    _write(directory / "ca.pem", pem_cert(ca.cert))
    return ca


def issue_account(ca: Issued, user: str) -> Issued:
    """A client certificate for the broker account ``user`` (its common name: RabbitMQ's EXTERNAL
    login takes the user name from it)."""
    return issue(ca, user, kind="ec", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])


def issue_server(ca: Issued, hosts: Sequence[str], days: int = 825) -> Issued:
    """A TLS server certificate (for the broker, or the gateway) valid for ``hosts`` (names or IPs)."""
    key = new_key("ec")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                                     x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Issued(key, cert)


def write_crl(directory: Path, root: Issued, revoked_serials: Iterable[int] | Mapping[int, datetime]) -> None:
    crl = make_crl(root, revoked_serials)
    _write(directory / "root-ca.crl.pem", crl.public_bytes(serialization.Encoding.PEM))


def load_root(directory: str | Path) -> Issued:
    d = Path(directory)
    return load_ca(PkiLayout(d).anchor, d / "ca" / "root-ca.key")


def load_ca(cert_path: Path, key_path: Path) -> Issued:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
    return Issued(key, cert)


def revoke(directory: str | Path, cert_paths: Iterable[Path]) -> None:
    """Add certificates to the root's CRL, keeping those already revoked (with their dates), and
    re-sign it.  (Broker accounts' certificates: :mod:`broker.relay.brokercrl`.)"""
    d = Path(directory)
    crl_path = d / "root-ca.crl.pem"
    dates = {r.serial_number: r.revocation_date_utc
             for r in x509.load_pem_x509_crl(crl_path.read_bytes())} if crl_path.exists() else {}
    for p in cert_paths:  # dated as the CRL's lastUpdate, as make_crl dates what it lists
        dates.setdefault(x509.load_pem_x509_certificate(p.read_bytes()).serial_number, _now() - timedelta(minutes=5))
    write_crl(d, load_root(d), dates)
