"""Prometheus metrics of hubs and the gateway, and the alerts derived from the trust material.

A hub serves them on ``--metrics-port`` (``lienthong up`` gives hub *n* port 9101+n); the gateway
on ``/metrics``.  Alerts are both log events (``alert`` with ``kind``) and gauges (``lienthong_alert``, and the
figures behind them), so either a log shipper or Prometheus rules can page someone: the rules
are in ``monitoring/prometheus/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from prometheus_client import Counter, Gauge, Histogram

from broker.core.deployment import Alerts
from broker.core.trust import TrustStore

MESSAGES = Counter("lienthong_messages_total", "Messages handled by a hub, by outcome and error code",
                   ["hub", "outcome", "code"])
HOP_SECONDS = Histogram("lienthong_hop_seconds", "From delivery to ack at a hub", ["hub"],
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
BATCH_SIZE = Histogram("lienthong_batch_size", "Deliveries a hub judged and admitted together", ["hub"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
RETRIES = Counter("lienthong_retries_total", "Messages sent to a retry tier or parked after the last", ["hub", "to"])
CERT_DAYS = Gauge("lienthong_certificate_days_left", "Days until the hub's certificate expires", ["hub"])
CRL_SECONDS = Gauge("lienthong_crl_seconds_left", "Seconds until the next CRL is due (negative: overdue)",
                    ["hub", "issuer"])
LINK_UP = Gauge("lienthong_link_up", "1 while a hub's link to a neighbouring hub's broker is up, else 0",
                ["hub", "neighbour"])
OUTBOUND = Counter("lienthong_outbound_total", "Copies a hub kept for a neighbour whose link was down, and "
                   "forwarded once it was back", ["hub", "neighbour", "what"])
QUEUE_MESSAGES = Gauge("lienthong_queue_messages", "Messages ready in a hub's queue", ["hub", "queue"])
ALERT = Gauge("lienthong_alert", "1 while an alert holds, else 0", ["hub", "kind", "subject"])
INBOX_AGE = Gauge("lienthong_inbox_oldest_seconds", "Age of the oldest message in an agency's inbox (0: empty)",
                  ["hub", "queue"])
SHA1_ACCEPTED = Counter("lienthong_sha1_accepted_total",
                        "Messages a hub accepted with SHA-1 (signature, digest or chain) under the sender's "
                        "legacy_sha1 policy", ["hub", "agency"])
EVENT_ALERT_KINDS = ("directory-refused", "crl-fetch-failed", "ocsp-unavailable", "time-stamp-failed")
"""Alerts that are events, not a state a gauge holds: counted by :data:`ALERTS_RAISED`."""
ALERT_KINDS = ("backlog", "parked", "inbox-backlog", "inbox-age", "certificate-expiring", "crl-missing",
               "crl-out-of-date", "sha1-accepted", "link-down", *EVENT_ALERT_KINDS)
"""Every alert a hub raises (``alert`` log events with ``kind``); monitoring/prometheus has a rule for each."""
ALERTS_RAISED = Counter("lienthong_alerts_raised_total", "Alert log events a hub process raised, by kind",
                        ["hub", "kind"])


def count_alerts(hub: str) -> Callable[[object, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """A log tap (:func:`broker.logs.add_tap`) counting each ``alert`` event of hub process ``hub``
    in :data:`ALERTS_RAISED`, so a Prometheus rule sees what only a log line said."""
    def tap(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event.get("event") == "alert":
            ALERTS_RAISED.labels(str(event.get("hub") or hub), str(event.get("kind", ""))).inc()
        return event
    return tap


def queue_alerts(hub: str, depths: Mapping[str, int], limits: Alerts,
                 ages: Mapping[str, float | None] | None = None) -> list[tuple[str, str, str]]:
    """Update the queue gauges; return ``(kind, subject, sentence)`` for each threshold exceeded:
    a queue's depth, or the age of the oldest message of an inbox (``ages``, in seconds).  Every
    known alert gauge is set, to 1 or back to 0, so a cleared alert shows as cleared."""
    alerts: list[tuple[str, str, str]] = []
    for queue, n in depths.items():
        QUEUE_MESSAGES.labels(hub, queue).set(n)
        watched = limits.limit_of(queue)
        if watched is None:
            continue
        kind = limits.exceeded(queue, n)
        ALERT.labels(hub, watched[0], queue).set(1 if kind else 0)
        if kind:
            what = {"backlog": f"{n} message(s) wait in the ingress of hub {hub}",
                    "parked": f"{n} message(s) are parked at hub {hub}"}.get(
                kind, f"{n} message(s) wait in the inbox of {queue[len('inbox.'):]}")
            alerts.append((kind, queue, what))
        if queue.startswith("inbox."):
            age = (ages or {}).get(queue)
            INBOX_AGE.labels(hub, queue).set(age or 0.0)
            old = limits.too_old(queue, age)
            ALERT.labels(hub, "inbox-age", queue).set(1 if old else 0)
            if old and age is not None:
                alerts.append(("inbox-age", queue, f"the oldest message in the inbox of {queue[len('inbox.'):]} "
                                                   f"has waited {age / 3600:.1f} h"))
    return alerts


DEFAULT_ALERTS = Alerts()


def trust_alerts(hub: str, cert: x509.Certificate, trust: TrustStore, *, limits: Alerts = DEFAULT_ALERTS,
                 now: datetime | None = None) -> list[tuple[str, str]]:
    """Update the trust gauges; return ``(kind, sentence)`` for everything that needs a person."""
    now = now or datetime.now(UTC)
    alerts: list[tuple[str, str]] = []
    days = (cert.not_valid_after_utc - now).days
    CERT_DAYS.labels(hub).set(days)
    ALERT.labels(hub, "certificate-expiring", hub).set(1 if days < limits.certificate_days else 0)
    if days < limits.certificate_days:
        alerts.append(("certificate-expiring", f"the certificate of hub {hub} expires in {days} day(s)"))
    for anchor in trust.anchors + trust.intermediates:
        crls = [c for c in trust.crls if c.issuer == anchor.subject and c.next_update_utc is not None]
        name = anchor.subject.rfc4514_string()
        ALERT.labels(hub, "crl-missing", name).set(0 if crls else 1)
        if not crls:
            alerts.append(("crl-missing", f"no CRL from {name} in the trust store"))
            continue
        left = (max(c.next_update_utc for c in crls if c.next_update_utc) - now).total_seconds()
        CRL_SECONDS.labels(hub, name).set(left)
        ALERT.labels(hub, "crl-out-of-date", name).set(1 if left < 0 else 0)
        if left < 0:
            alerts.append(("crl-out-of-date", f"the CRL of {name} was due {-left / 3600:.0f} h ago"))
    return alerts
