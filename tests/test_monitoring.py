"""The monitoring kit (monitoring/): Prometheus alert rules checked and unit-tested by promtool, a
rule for every alert the hubs raise, and a Grafana dashboard that only shows metrics lienthong
exports (or the broker's and Prometheus' own)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
import yaml

from broker.relay import metrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "monitoring" / "prometheus"
GRAFANA = ROOT / "monitoring" / "grafana" / "lienthong.json"
FOREIGN = {"up", "rabbitmq_process_open_fds", "rabbitmq_process_max_fds"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (scripts/bootstrap.sh installs Debian's prometheus)")
        pytest.skip("promtool is not installed")
    return path


def _rules() -> list[dict[str, object]]:
    raw = yaml.safe_load((PROMETHEUS / "lienthong-rules.yml").read_text(encoding="utf-8"))
    return [r for g in raw["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules_and_the_configuration(promtool: str) -> None:
    """`promtool check rules` accepts the rules file and `promtool check config` the example
    configuration that loads it."""
    rules = subprocess.run([promtool, "check", "rules", "lienthong-rules.yml"], cwd=PROMETHEUS,
                           capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in rules.stdout
    config = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS,
                            capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_pass_and_cover_every_rule(promtool: str) -> None:
    """`promtool test rules` passes, and its tests make every rule fire (with its labels and both
    languages' annotations) at least once."""
    done = subprocess.run([promtool, "test", "rules", "lienthong-rules.test.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    tests = yaml.safe_load((PROMETHEUS / "lienthong-rules.test.yml").read_text(encoding="utf-8"))["tests"]
    fired = {t["alertname"] for group in tests for t in group.get("alert_rule_test", []) if t["exp_alerts"]}
    assert fired == {r["alert"] for r in _rules()}
    for group in tests:
        for t in group.get("alert_rule_test", []):
            for alert in t["exp_alerts"]:
                assert set(alert["exp_annotations"]) == {"summary", "description", "summary_en", "description_en"}


def test_the_kit_is_utf8_nfc() -> None:
    """The rules, their tests and the dashboard are UTF-8 in NFC: Vietnamese annotations and titles
    show their diacritics as Vietnamese text must."""
    for path in (*PROMETHEUS.iterdir(), GRAFANA):
        text = path.read_bytes().decode("utf-8")
        assert unicodedata.is_normalized("NFC", text), path
    assert "Trục {{ $labels.instance }} ngừng hoạt động" in (PROMETHEUS / "lienthong-rules.yml").read_text(
        encoding="utf-8")


def test_every_alert_the_hubs_raise_has_a_rule() -> None:
    """Each alert kind of ``metrics.ALERT_KINDS`` (the ``alert`` log events and the lienthong_alert
    gauge) is named by a rule, by its kind or by the figure behind it; and a hub that stops
    answering and the broker's file handles have rules of their own."""
    exprs = " ".join(str(r["expr"]) for r in _rules())
    behind = {"certificate-expiring": "lienthong_certificate_days_left",
              "crl-out-of-date": "lienthong_crl_seconds_left", "sha1-accepted": "lienthong_sha1_accepted_total",
              "link-down": "lienthong_link_up == 0"}
    for kind in metrics.ALERT_KINDS:
        assert f'kind="{kind}"' in exprs or behind.get(kind, "?") in exprs, f"no rule for the {kind} alert"
    assert 'up{job="lienthong-hubs"} == 0' in exprs and "absent(up" in exprs
    assert "rabbitmq_process_open_fds / rabbitmq_process_max_fds" in exprs


def test_every_alert_in_the_code_is_a_known_kind() -> None:
    """Every ``alert`` log event the code writes with a literal ``kind`` names one of
    ``metrics.ALERT_KINDS`` (so the test above holds it to a rule): a new alert without a rule fails
    here.  And a hub process counts its alert events for Prometheus (``lienthong_alerts_raised_total``)."""
    written = set()
    for path in (ROOT / "broker").rglob("*.py"):
        written |= set(re.findall(r'"alert", kind="([a-z0-9-]+)"', path.read_text(encoding="utf-8")))
    assert written and written <= set(metrics.ALERT_KINDS), written - set(metrics.ALERT_KINDS)
    assert set(metrics.EVENT_ALERT_KINDS) <= written

    from prometheus_client import REGISTRY

    def raised() -> float:
        return REGISTRY.get_sample_value("lienthong_alerts_raised_total",
                                         {"hub": "H99", "kind": "directory-refused"}) or 0.0

    before, tap = raised(), metrics.count_alerts("H99")
    tap(None, "warning", {"event": "alert", "kind": "directory-refused"})
    tap(None, "info", {"event": "alert cleared", "kind": "directory-refused"})
    tap(None, "info", {"event": "serving", "hub": "H99"})
    assert raised() == before + 1


def test_grafana_dashboard_shows_only_exported_metrics() -> None:
    """The Grafana dashboard is valid JSON, each panel queries Prometheus, and every metric its
    queries name is one lienthong exports (broker/relay/metrics.py), RabbitMQ's or ``up``."""
    board = json.loads(GRAFANA.read_text(encoding="utf-8"))
    exported = {m for c in (metrics.MESSAGES, metrics.HOP_SECONDS, metrics.BATCH_SIZE, metrics.RETRIES,
                            metrics.CERT_DAYS, metrics.CRL_SECONDS, metrics.QUEUE_MESSAGES, metrics.ALERT,
                            metrics.SHA1_ACCEPTED, metrics.INBOX_AGE, metrics.LINK_UP, metrics.OUTBOUND,
                            metrics.ALERTS_RAISED) for f in c.collect() for m in
                {f.name, f.name + "_total", f.name + "_bucket"}}
    named: set[str] = set()
    for panel in board["panels"]:
        assert panel["title"] and panel["targets"], panel
        for target in panel["targets"]:
            names = set(re.findall(r"\b([a-z_]+)(?=[{\[ )]|$)", target["expr"])) - {
                "sum", "by", "rate", "increase", "histogram_quantile", "hub", "le", "outcome", "code", "agency", "to",
                "neighbour", "what", "kind"}
            named |= names
    assert named and named <= exported | FOREIGN, named - exported - FOREIGN
    assert {"lienthong_alert", "lienthong_inbox_oldest_seconds", "rabbitmq_process_open_fds", "lienthong_link_up",
            "lienthong_outbound_total", "lienthong_alerts_raised_total"} <= named
