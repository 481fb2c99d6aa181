"""The topology's ``settings:`` block is read into typed, frozen settings when the topology loads: a
misspelt key or a value of the wrong kind stops the load with a sentence naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from broker.core import deployment
from broker.core.errors import ConfigError
from broker.core.topology import Topology

ROOT = Path(__file__).resolve().parents[1]


def test_the_sample_settings_are_read_typed() -> None:
    """config/topology.yaml's settings arrive as numbers, shares and sections, the rest as defaults."""
    s = Topology.load(ROOT / "config" / "topology.yaml").settings
    assert s.max_bytes == 52428800 and s.alerts.inbox_backlog == 500 and s.alerts.certificate_days == 30
    assert s.report.targets["commune"] == 0.60 and s.report.utc_offset == "+07:00"
    assert s.retry_tiers_ms == () and s.revocation.grace_hours == 0 and s.audit.tsa_url == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_bytes = 1  # type: ignore[misc]


@pytest.mark.parametrize(("raw", "named"), [
    ({"alerts": {"backlog": 10, "inbox_backog": 5}}, "settings.alerts: unknown key(s) inbox_backog"),
    ({"max_bytes": "fifty megabytes"}, "settings.max_bytes must be a whole number"),
    ({"max_bytes": 1.5}, "settings.max_bytes must be a whole number"),
    ({"retry_tiers_ms": 1000}, "settings.retry_tiers_ms must be a list"),
    ({"retry_tiers_ms": [1000, True]}, "settings.retry_tiers_ms[1] must be a whole number"),
    ({"report": {"targets": {"commune": 60}}}, "settings.report.targets are shares between 0 and 1"),
    ({"report": {"utc_offset": "ICT"}}, "settings.report.utc_offset must be an offset such as +07:00"),
    ({"revocation": ["grace_hours"]}, "settings.revocation must be a mapping"),
    ({"tsa_url": "http://tsa"}, "settings: unknown key(s) tsa_url"),
])
def test_a_wrong_setting_stops_the_load_naming_it(raw: dict[str, object], named: str, tmp_path: Path) -> None:
    """Each mistake is refused as CONFIG with the file and the key it is about, never a default in silence."""
    topology = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    topology["settings"] = raw
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Topology.load(path)
    assert named in info.value.message and str(path) in info.value.message


def test_no_settings_means_every_default() -> None:
    """A topology without ``settings:`` gets the documented defaults."""
    s = deployment.read(None)
    assert s == deployment.DeploymentSettings()
    assert s.limits.max_depth == 64 and s.vxp.window_seconds == 900.0
