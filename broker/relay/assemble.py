"""Assemble a hub from settings: topology, trust store, hub key, hub certificates, state store.

Keys (a hub's, an agency's, ``--key``) are a PEM file or a PKCS#11 URI (``broker.pkcs11``): a
principal whose ``key.pem`` is absent and whose ``key.pkcs11`` holds a URI signs on that token."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from broker import pkcs11
from broker.core.directory import Directory
from broker.core.errors import ConfigError, CredentialRefused, TransientError
from broker.core.hop import Hop
from broker.core.signer import SigningKey, read_certificates
from broker.core.topology import Topology, subject_uid
from broker.core.trust import TrustStore
from broker.i18n import N_
from broker.logs import get_logger
from broker.relay.directories import Directories, in_force
from broker.relay.livetrust import LiveTrust, revocation_trust
from broker.relay.store import SqlStore, open_store
from broker.settings import PkiLayout, Settings


def hub_certificates(pki: Path, topology: Topology, trust: TrustStore | None = None) -> dict[str, x509.Certificate]:
    """Every hub's certificate, bound to its hub id.  Hubs and recipients judge each against the
    trust store in force whenever they check one of its records
    (:func:`broker.core.hoprecords.hub_certificate`), so one hub's revoked certificate stops
    no other hub; with ``trust`` (an auditor's commands), each is validated now as well."""
    certs: dict[str, x509.Certificate] = {}
    for hub_id in topology.hubs:
        path = PkiLayout(pki).hub(hub_id)[1]
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except OSError:
            raise ConfigError(N_("no certificate for hub {hub!r} at {path}"), hub=hub_id, path=path) from None
        if trust is not None:
            trust.validate(cert)
        if subject_uid(cert) != f"hub:{hub_id}":
            raise ConfigError(N_("{path} is not the certificate of hub {hub!r}"), path=path, hub=hub_id)
        certs[hub_id] = cert
    return certs


@dataclass(frozen=True)
class Assembled:
    """What a hub worker serves with."""

    hop: Hop
    trust: LiveTrust
    """The trust store it follows (its directory and the CRLs fetched for it)."""
    store: SqlStore
    directories: Directories
    """The directory in force at the hub (none until it is handed one: it then runs on its configured topology)."""


def assemble(settings: Settings, hub_id: str, store: SqlStore) -> Assembled:
    """Hub ``hub_id``: the newest directory it kept, else its configured topology; a token that
    refuses the hub key's PIN raises :class:`CredentialRefused` (never to be retried: it could
    lock the token).  Each hub's certificate is judged by the trust store in force whenever one of
    its records is checked (``hoprecords.hub_certificate``), not here."""
    configured = Topology.load(settings.topology)
    # how this hub judges revocation is its own to say
    live = revocation_trust(settings.pki, configured.settings.revocation, settings.data_dir / "crls")
    directories = Directories(hub_id, store, live, settings.keys.authorities, get_logger("lienthong.directory"),
                              local=configured.settings, copy_to=directory_copies(settings))
    in_force = directories.load()
    topology = in_force.topology if in_force is not None else configured
    if hub_id not in topology.hubs:
        raise ConfigError(N_("hub {hub!r} is not in the topology"), hub=hub_id)
    certs = dict(in_force.hub_certificates) if in_force is not None else hub_certificates(settings.pki, topology)
    hop = Hop(hub=hub_id, topology=topology, trust=live.current(),
              key=principal_key(settings.keys.hub(hub_id), modules=settings.pkcs11_modules), hub_certs=certs,
              limits=topology.settings.limits,
              receipts=settings.tuning.receipts,  # receipts off only to measure their cost (bench/)
              bundles=settings.tuning.receipt_bundles)  # bundles off likewise
    return Assembled(hop, live, store, directories)


def directory_copies(settings: Settings) -> Path:
    """Where this host's hubs copy the directory in force, for the operator's commands."""
    return settings.data_dir / "directory"


def directory_in_force(settings: Settings) -> Directory | None:
    """The newest directory this host's hubs run on (None: they run on their topology file)."""
    return in_force(directory_copies(settings), Topology.load(settings.topology),
                    trust=lambda: TrustStore.load(settings.pki), authorities=settings.keys.authorities())


def topology_in_force(settings: Settings) -> Topology:
    """The topology of this host: the newest directory its hubs run on, else its topology file."""
    d = directory_in_force(settings)
    return d.topology if d is not None else Topology.load(settings.topology)


def hub_certificates_in_force(settings: Settings, topology: Topology) -> dict[str, x509.Certificate]:
    """Every hub's certificate: the directory's in force, else the PKI's (each judged by the trust
    store when a record of its hub is checked)."""
    d = directory_in_force(settings)
    return dict(d.hub_certificates) if d is not None else hub_certificates(settings.pki, topology)


def signing_key(key: str | Path, cert: str | Path, *, modules: tuple[str, ...] = ()) -> SigningKey:
    """A signing key from a PEM file, or from the token a PKCS#11 URI names (the key stays there;
    it is checked to belong to ``cert``; its module must be on the allow-list ``modules``, the
    default's when empty)."""
    if not pkcs11.is_uri(str(key)):
        return SigningKey.load(key, cert)
    certs = read_certificates(cert)
    try:
        return SigningKey.with_certificate(
            pkcs11.open_key(str(key), certs[0].public_key(), modules=modules or pkcs11.DEFAULT_MODULES), certs)
    except pkcs11.PinRefused as exc:
        raise CredentialRefused(exc.template, **exc.fields) from None
    except pkcs11.TokenError as exc:
        raise ConfigError(exc.template, **exc.fields) from None


def principal_key(paths: tuple[Path, Path], *, modules: tuple[str, ...] = ()) -> SigningKey:
    """A hub's or an agency's own signing key from its (``key.pem``, ``cert.pem``): the PEM key,
    else the token that ``key.pkcs11`` beside it names."""
    key, cert = paths
    token = PkiLayout.token_file(key)
    if key.exists() or not token.exists():
        return signing_key(key, cert)
    uri = token.read_text(encoding="utf-8").strip()
    if not pkcs11.is_uri(uri):
        raise ConfigError(N_("{token} does not hold a PKCS#11 URI (pkcs11:...)"), token=token)
    return signing_key(uri, cert, modules=modules)


def has_key(paths: tuple[Path, Path]) -> bool:
    """Whether this host holds the principal's signing key (a PEM file or a token's URI)."""
    return paths[0].exists() or PkiLayout.token_file(paths[0]).exists()


def hub_stores(settings: Settings) -> list[SqlStore]:
    """The state stores of every hub this machine keeps (one PostgreSQL database, or each hub's
    SQLite file that exists), for the commands that read across hubs (audit, report)."""
    if settings.state_url.startswith(("postgresql://", "postgres://")):
        return [open_store(settings.state_url, tuning=settings.tuning)]
    return [open_store(settings.state_url, hub=h, tuning=settings.tuning)
            for h in Topology.load(settings.topology).hubs if (Path(settings.state_url) / f"{h}.sqlite3").exists()]


def start_hub(settings: Settings, hub_id: str, *, sleep: Callable[[float], None] = time.sleep,
              max_delay: float = 30.0) -> Assembled:
    """Open the hub's state store and assemble the hub, waiting with back-off (0.5 s doubling up to
    ``max_delay``) while something it needs is not there yet: a database still starting, or
    not yet created.  Each wait is logged with its reason.  Configuration errors (a missing key, a
    hub not in the topology, a schema newer than this code) are raised at once: waiting would
    not mend them.  The topology is read once, here (today's 4,145 agencies take 0.5 s to read)."""
    log = get_logger("lienthong.start").bind(hub=hub_id)
    delay, attempt = 0.5, 1
    while True:
        try:
            return assemble(settings, hub_id, open_store(settings.state_url, hub=hub_id, tuning=settings.tuning,
                                                         worker=True))
        except TransientError as exc:
            log.warning("start failed; retrying", error=str(exc), attempt=attempt, in_seconds=delay)
            sleep(delay)
            delay, attempt = min(delay * 2, max_delay), attempt + 1
