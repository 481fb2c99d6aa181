"""A trust store that follows its directory: a new snapshot when a file changes.

Hubs and recipients judge with the current :class:`~broker.core.trust.TrustStore`, an immutable
snapshot.  :class:`LiveTrust` looks at the directory (and at the CRLs the fetcher keeps, see
:mod:`broker.relay.revocation`) at most every :data:`REFRESH_SECONDS`, and when a file was added,
removed or changed reads a new snapshot, so a new CRL counts at once, without a restart.

There is one revocation truth: hubs and recipients (the SDK, the gateway, the folder drop) make
their trust store the same way, :func:`revocation_trust`: the deployment's trust directory, the
CRLs fetched beside it, OCSP when no current CRL speaks, and the topology's
``settings.revocation`` (grace, CRL age, OCSP).  A hub's worker runs the CRL fetcher; recipients
share one per process (:func:`recipient_trust`).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from broker.core.cafiles import stamp
from broker.core.deployment import Revocation
from broker.core.errors import ConfigError
from broker.core.trust import RevocationPolicy, StatusSource, TrustStore
from broker.relay.revocation import CrlFetcher, OcspClient

REFRESH_SECONDS = 5.0


class LiveTrust:
    """:class:`broker.core.trust.TrustSource` over a directory."""

    def __init__(self, directory: str | Path, *, require_crl: bool = True, policy: RevocationPolicy | None = None,
                 crl_cache: Path | None = None, status_source: StatusSource | None = None) -> None:
        self.directory, self.crl_cache = Path(directory), crl_cache
        self._options = {"require_crl": require_crl, "policy": policy, "crl_cache": crl_cache,
                         "status_source": status_source}
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._snapshot = self._read()
        self._checked = time.monotonic()

    def _stamps(self) -> tuple[tuple[str, int, int], ...]:
        return tuple(s for d in (self.directory, self.crl_cache) if d is not None for s in stamp(d))

    def _read(self) -> TrustStore:
        return TrustStore.load(self.directory, **self._options)  # type: ignore[arg-type]

    def current(self) -> TrustStore:
        """The snapshot in force (re-read first if a file changed, looked at every few seconds)."""
        self.refresh()
        return self._snapshot

    def refresh(self, *, every: float = REFRESH_SECONDS) -> bool:
        """Read a new snapshot if a file changed; at most once per ``every`` seconds.  A directory
        caught half-written (a file being copied in, a broken one) keeps the snapshot in force until
        a later look.  Returns True when a new snapshot was read."""
        if time.monotonic() - self._checked < every:
            return False
        with self._lock:
            self._checked = time.monotonic()
            now = self._stamps()
            if now == self._stamp:
                return False
            try:
                snapshot = self._read()
            except ConfigError:
                return False
            self._snapshot, self._stamp = snapshot, now
            return True


def revocation_trust(pki: Path, revocation: Revocation, crl_cache: Path) -> LiveTrust:
    """The trust store hubs and recipients alike judge with: ``pki`` followed, with the CRLs
    fetched into ``crl_cache``, the grace and CRL age of ``revocation`` (the topology's
    ``settings.revocation``), and its OCSP responder (else each certificate's) when no current
    CRL speaks for a certificate."""
    ocsp = OcspClient(revocation.ocsp_url or None, max_age=timedelta(seconds=revocation.ocsp_max_age_seconds))
    return LiveTrust(pki, policy=RevocationPolicy.of(revocation), crl_cache=crl_cache, status_source=ocsp)


_recipients: dict[tuple[Path, Path, Revocation], LiveTrust] = {}
_recipients_lock = threading.Lock()
_never = threading.Event()


def recipient_trust(pki: Path, revocation: Revocation, crl_cache: Path, *, fetch_seconds: float) -> LiveTrust:
    """:func:`revocation_trust` for the recipients of this process (every agency client a gateway
    opens, a folder drop, the SDK): made once per directory, with a CRL fetcher in a thread of its
    own, as a hub's worker runs one (every ``fetch_seconds``; 0: none)."""
    key = (pki, crl_cache, revocation)
    with _recipients_lock:
        trust = _recipients.get(key)
        if trust is None:
            trust = _recipients[key] = revocation_trust(pki, revocation, crl_cache)
            if fetch_seconds > 0:
                fetcher = CrlFetcher(trust, crl_cache, revocation.crl_urls, fetch_seconds, _never)
                threading.Thread(target=fetcher.run, name="crl-fetch", daemon=True).start()
    return trust
