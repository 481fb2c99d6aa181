"""Assemble a hub from settings: topology, trust store, hub key, hub certificates, state store.

Keys (a hub's, an agency's, ``--key``) are a PEM file or a PKCS#11 URI (``broker.pkcs11``): a
principal whose ``key.pem`` is absent and whose ``key.pkcs11`` holds a URI signs on that token."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from broker import pkcs11
from broker.core.errors import ConfigError, CredentialRefused, TransientError
from broker.core.hop import Hop
from broker.core.signer import SigningKey, read_certificates
from broker.core.topology import Topology, subject_uid
from broker.core.trust import RevocationPolicy, TrustStore
from broker.logs import get_logger
from broker.relay.livetrust import LiveTrust
from broker.relay.revocation import OcspClient
from broker.relay.store import SqlStore, open_store
from broker.settings import PkiLayout, Settings


def hub_certificates(pki: Path, topology: Topology, trust: TrustStore) -> dict[str, x509.Certificate]:
    """Every hub's certificate, each validated against the trust store and bound to its hub id."""
    certs: dict[str, x509.Certificate] = {}
    for hub_id in topology.hubs:
        path = PkiLayout(pki).hub(hub_id)[1]
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except OSError:
            raise ConfigError(f"no certificate for hub {hub_id!r} at {path}") from None
        trust.validate(cert)
        if subject_uid(cert) != f"hub:{hub_id}":
            raise ConfigError(f"{path} is not the certificate of hub {hub_id!r}")
        certs[hub_id] = cert
    return certs


def load_hop(settings: Settings, hub_id: str, topology: Topology | None = None) -> tuple[Hop, LiveTrust]:
    """Hub ``hub_id`` and the trust store it follows (its directory and the CRLs fetched for it); a
    token that refuses the hub key's PIN raises :class:`CredentialRefused` (never to be retried:
    it could lock the token)."""
    topology = topology or Topology.load(settings.topology)
    if hub_id not in topology.hubs:
        raise ConfigError(f"hub {hub_id!r} is not in the topology")
    revocation = topology.settings.revocation
    live = LiveTrust(settings.pki, policy=RevocationPolicy.of(revocation), crl_cache=settings.data_dir / "crls",
                     status_source=OcspClient(revocation.ocsp_url or None))
    trust = live.current()
    return Hop(hub=hub_id, topology=topology, trust=trust,
               key=principal_key(settings.keys.hub(hub_id), modules=settings.pkcs11_modules),
               hub_certs=hub_certificates(settings.pki, topology, trust),
               limits=topology.settings.limits,
               receipts=settings.tuning.receipts), live  # receipts off only to measure their cost (bench/)


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
        raise CredentialRefused(str(exc)) from None
    except pkcs11.TokenError as exc:
        raise ConfigError(str(exc)) from None


def principal_key(paths: tuple[Path, Path], *, modules: tuple[str, ...] = ()) -> SigningKey:
    """A hub's or an agency's own signing key from its (``key.pem``, ``cert.pem``): the PEM key,
    else the token that ``key.pkcs11`` beside it names."""
    key, cert = paths
    token = PkiLayout.token_file(key)
    if key.exists() or not token.exists():
        return signing_key(key, cert)
    uri = token.read_text(encoding="utf-8").strip()
    if not pkcs11.is_uri(uri):
        raise ConfigError(f"{token} does not hold a PKCS#11 URI (pkcs11:...)")
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
              max_delay: float = 30.0, topology: Topology | None = None) -> tuple[Hop, LiveTrust, SqlStore]:
    """Load the hub and open its state store, waiting with back-off (0.5 s doubling up to
    ``max_delay``) while something it needs is not there yet: a database still starting, or
    not yet created.  Each wait is logged with its reason.  Configuration errors (a missing key, a
    hub not in the topology, a schema newer than this code) are raised at once: waiting would
    not mend them.  ``topology``: the one the caller read (reading today's 4,145 agencies again
    is 0.6 s of each worker's start)."""
    log = get_logger("lienthong.start").bind(hub=hub_id)
    delay, attempt = 0.5, 1
    while True:
        try:
            hop, trust = load_hop(settings, hub_id, topology)
            return hop, trust, open_store(settings.state_url, hub=hub_id, tuning=settings.tuning, worker=True)
        except TransientError as exc:
            log.warning("start failed; retrying", error=str(exc), attempt=attempt, in_seconds=delay)
            sleep(delay)
            delay, attempt = min(delay * 2, max_delay), attempt + 1
