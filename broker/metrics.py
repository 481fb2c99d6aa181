"""Prometheus metrics of hubs and the gateway, and the alerts derived from the trust material.

A hub serves them on ``--metrics-port`` (``lienthong up`` gives hub *n* port 9101+n); the gateway
on ``/metrics``.  Alerts are both log events (``alert`` with ``kind``) and gauges, so either a log
shipper or Prometheus rules can page someone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from prometheus_client import Counter, Gauge, Histogram

from .trust import TrustStore

MESSAGES = Counter("lienthong_messages_total", "Messages handled by a hub, by outcome and error code",
                   ["hub", "outcome", "code"])
HOP_SECONDS = Histogram("lienthong_hop_seconds", "From delivery to ack at a hub", ["hub"],
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
RETRIES = Counter("lienthong_retries_total", "Messages sent to a retry tier or parked after the last", ["hub", "to"])
CERT_DAYS = Gauge("lienthong_certificate_days_left", "Days until the hub's certificate expires", ["hub"])
CRL_SECONDS = Gauge("lienthong_crl_seconds_left", "Seconds until the next CRL is due (negative: overdue)",
                    ["hub", "issuer"])
ALERT_CERT_DAYS = 30


def trust_alerts(hub: str, cert: x509.Certificate, trust: TrustStore,
                 now: datetime | None = None) -> list[tuple[str, str]]:
    """Update the trust gauges; return ``(kind, sentence)`` for everything that needs a person."""
    now = now or datetime.now(UTC)
    alerts: list[tuple[str, str]] = []
    days = (cert.not_valid_after_utc - now).days
    CERT_DAYS.labels(hub).set(days)
    if days < ALERT_CERT_DAYS:
        alerts.append(("certificate-expiring", f"the certificate of hub {hub} expires in {days} day(s)"))
    for anchor in trust.anchors + trust.intermediates:
        crls = [c for c in trust.crls if c.issuer == anchor.subject and c.next_update_utc is not None]
        name = anchor.subject.rfc4514_string()
        if not crls:
            alerts.append(("crl-missing", f"no CRL from {name} in the trust store"))
            continue
        left = (max(c.next_update_utc for c in crls if c.next_update_utc) - now).total_seconds()
        CRL_SECONDS.labels(hub, name).set(left)
        if left < 0:
            alerts.append(("crl-out-of-date", f"the CRL of {name} was due {-left / 3600:.0f} h ago"))
    return alerts
