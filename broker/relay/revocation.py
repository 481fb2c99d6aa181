"""CRLs fetched from where their CAs publish them, so a hub's revocation data stays current.

A hub's worker runs :class:`CrlFetcher` in a thread of its own: every so often it downloads each
CRL URL (``settings.revocation.crl_urls`` in the topology, and the CRL distribution points named
by the trust store's own CA certificates), keeps a CRL only if a CA of the trust store signed it
and it is newer than the one kept, and writes it atomically into the trust store's CRL cache
directory.  The trust store re-reads that directory when a file in it changes
(``TrustStore.refresh``), so the next message is judged with the new CRL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.core.trust import TrustStore

MAX_CRL_BYTES = 20 * 1024 * 1024
log = structlog.get_logger("lienthong.revocation")


def distribution_points(certs: Sequence[x509.Certificate]) -> list[str]:
    """The http(s) URLs of the CRL distribution points these certificates name, in order, once each."""
    urls: list[str] = []
    for cert in certs:
        try:
            points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except x509.ExtensionNotFound:
            continue
        for point in points:
            for name in point.full_name or []:
                if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(("http://", "https://")):
                    if name.value not in urls:
                        urls.append(name.value)
    return urls


@dataclass
class FetchReport:
    fetched: list[str] = field(default_factory=list)
    """URLs whose CRL was newer than the one kept, and is now kept."""
    unchanged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(URL, why): unreachable, not a CRL, or not signed by a CA of the trust store."""


def fetch_crls(trust: TrustStore, cache: Path, urls: Sequence[str], *, timeout: float = 10.0,
               opener: Callable[..., Any] = urllib.request.urlopen) -> FetchReport:
    """Download each URL's CRL into ``cache`` (one file per URL) if a CA of ``trust`` signed it
    and it is newer than the one kept."""
    report = FetchReport()
    cache.mkdir(parents=True, exist_ok=True)
    cas = [*trust.anchors, *trust.intermediates]
    for url in urls:
        try:
            with opener(url, timeout=timeout) as resp:
                data = resp.read(MAX_CRL_BYTES + 1)
        except OSError as exc:
            report.refused.append((url, f"unreachable: {exc}"))
            continue
        if len(data) > MAX_CRL_BYTES:
            report.refused.append((url, "larger than 20 MiB"))
            continue
        try:
            crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        except ValueError:
            report.refused.append((url, "not a CRL"))
            continue
        if not any(ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
                   for ca in cas):
            report.refused.append((url, "not signed by a CA of the trust store"))
            continue
        path = cache / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".crl")
        if path.exists():
            kept = x509.load_pem_x509_crl(path.read_bytes())
            if kept.last_update_utc >= crl.last_update_utc:
                report.unchanged.append(url)
                continue
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(crl.public_bytes(Encoding.PEM))
        os.replace(tmp, path)
        report.fetched.append(url)
    return report


class CrlFetcher:
    """Fetch every ``every_seconds`` until ``stopped`` is set (a thread of the hub worker)."""

    def __init__(self, trust: TrustStore, cache: Path, configured: Sequence[str], every_seconds: float,
                 stopped: threading.Event) -> None:
        self.trust, self.cache, self.configured = trust, cache, list(configured)
        self.every, self.stopped = every_seconds, stopped

    def run(self) -> None:
        while True:
            urls = list(dict.fromkeys([*self.configured,
                                       *distribution_points([*self.trust.anchors, *self.trust.intermediates])]))
            if urls:
                report = fetch_crls(self.trust, self.cache, urls)
                for url, why in report.refused:
                    log.warning("alert", kind="crl-fetch-failed", subject=url, detail=why)
                if report.fetched:
                    log.info("CRLs fetched", urls=report.fetched)
            if self.stopped.wait(self.every):
                return
