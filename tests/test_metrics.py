"""Trust alerts: certificates about to expire and CRLs out of date become log events and gauges;
queue alerts are raised once and cleared only when they stop holding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import REGISTRY

from broker.core.trust import TrustStore
from broker.relay import devpki
from broker.relay.metrics import trust_alerts
from broker.relay.watch import Raised


def test_no_alert_on_fresh_material(dev_pki: Path) -> None:
    """A new dev PKI raises nothing, and the gauge shows the hub certificate's days left."""
    root = devpki.load_root(dev_pki)
    hub = devpki.issue(root, "hub", uid="hub:H41", kind="ec", days=400)
    assert trust_alerts("H41", hub.cert, TrustStore.load(dev_pki)) == []
    assert 398 <= REGISTRY.get_sample_value("lienthong_certificate_days_left", {"hub": "H41"}) <= 400


def test_alerts_for_expiring_certificate_and_overdue_crl(dev_pki: Path, tmp_path: Path) -> None:
    """A hub certificate with 10 days left and a CRL past its nextUpdate each raise an alert."""
    root = devpki.load_root(dev_pki)
    hub = devpki.issue(root, "hub", uid="hub:H14", kind="ec", days=10)
    (tmp_path / "root-ca.pem").write_bytes((dev_pki / "root-ca.pem").read_bytes())
    old = devpki.make_crl(root, days=1, last_update=datetime.now(UTC) - timedelta(days=3))
    (tmp_path / "root.crl.pem").write_bytes(old.public_bytes(Encoding.PEM))
    kinds = [k for k, _ in trust_alerts("H14", hub.cert, TrustStore.load(tmp_path, require_crl=False))]
    assert kinds == ["certificate-expiring", "crl-out-of-date"]


def test_a_queue_alert_is_raised_once_and_cleared_after_two_checks_without_it() -> None:
    """One check that misses an alert (a queue's ready count dips while ``lienthong status`` looks at
    its head) neither clears it nor raises it again; two in a row clear it; it can then be raised again."""
    backlog, parked = ("inbox-backlog", "inbox.000.00.02.H41"), ("parked", "parking")
    alerts = Raised()
    assert alerts.update([backlog]) == ([backlog], [])
    assert alerts.update([backlog, parked]) == ([parked], [])
    assert alerts.update([parked]) == ([], [])  # the dip: backlog unseen once
    assert alerts.update([backlog, parked]) == ([], [])  # still held: not raised again
    assert alerts.update([]) == ([], [])
    assert alerts.update([]) == ([], [backlog, parked])
    assert alerts.update([backlog]) == ([backlog], [])
