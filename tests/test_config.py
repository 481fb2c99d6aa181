"""The configuration is found from anywhere, the same way by every command: a --topology flag,
else LIENTHONG_TOPOLOGY, else topology.yaml in the data directory, else the checkout's
config/topology.yaml; when none is there, the error names every place looked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker.cli.app import load_topology
from broker.core.errors import ConfigError
from broker.settings import Settings, find_topology

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "config" / "topology.yaml"


def _small(path: Path) -> Path:
    """The sample topology with the national hub and its two ministries alone."""
    raw = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    raw["hubs"] = [h for h in raw["hubs"] if h["id"] == "national"]
    raw["agencies"] = [a for a in raw["agencies"] if a["hub"] == "national"]
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``lienthong ARGS`` from ``cwd``, with no LIENTHONG_* setting but ``env``'s (English)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIENTHONG_")}
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, "LIENTHONG_LANG": "en", **env}, timeout=120)


def test_search_order(tmp_path: Path) -> None:
    """The flag wins over the variable, the variable over the data directory, the data directory over
    the checkout's config/; an explicit place is the only one looked at."""
    data, repo = tmp_path / "data", tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "topology.yaml").write_text("x", encoding="utf-8")
    env = {"LIENTHONG_TOPOLOGY": "/from/env.yaml"}
    assert find_topology("/flag.yaml", env, data, repo) == (Path("/flag.yaml"), ("--topology /flag.yaml",))
    assert find_topology(None, env, data, repo) == (Path("/from/env.yaml"), ("LIENTHONG_TOPOLOGY=/from/env.yaml",))
    searched = (str(data / "topology.yaml"), str(repo / "config" / "topology.yaml"))
    assert find_topology(None, {}, data, repo) == (repo / "config" / "topology.yaml", searched)
    data.mkdir()
    (data / "topology.yaml").write_text("y", encoding="utf-8")
    assert find_topology(None, {}, data, repo) == (data / "topology.yaml", searched)


def test_the_error_names_every_place_looked(tmp_path: Path) -> None:
    """With no topology anywhere, CONFIG names the data directory's and the checkout's places."""
    data, repo = tmp_path / "data", tmp_path / "repo"
    topology, searched = find_topology(None, {}, data, repo)
    s = Settings(data_dir=data, topology=topology, pki=data / "pki", state_url=str(data / "state"),
                 mgmt_url="http://127.0.0.1:15672", topology_searched=searched)
    with pytest.raises(ConfigError) as caught:
        load_topology(s)
    assert str(data / "topology.yaml") in caught.value.message
    assert str(repo / "config" / "topology.yaml") in caught.value.message


def test_commands_run_from_another_folder(tmp_path: Path) -> None:
    """From a folder outside the checkout, with nothing set, a command that needs the topology finds
    the checkout's config/ (the development default)."""
    doc = tmp_path / "doc.edxml"
    done = run("new-document", "--from", "000.00.51.H41", "--to", "001.00.31.H14", "--subject", "Thử", "-o",
               str(doc), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "UBND xã Hưng Nguyên" in doc.read_text(encoding="utf-8")


def test_the_variable_and_the_data_directory_are_honoured_by_pki_init(tmp_path: Path) -> None:
    """`pki init` takes LIENTHONG_TOPOLOGY (it used to read config/topology.yaml whatever was set),
    the data directory's topology.yaml when the variable is unset, and the checkout's when there is
    neither."""
    small = _small(tmp_path / "small.yaml")
    by_env = run("pki", "init", str(tmp_path / "a"), cwd=tmp_path, LIENTHONG_TOPOLOGY=str(small))
    assert by_env.returncode == 0, by_env.stderr
    assert "1 hubs, 2 agencies" in by_env.stdout
    data = tmp_path / "data"
    data.mkdir()
    _small(data / "topology.yaml")
    by_data = run("pki", "init", str(tmp_path / "b"), cwd=tmp_path / "data", LIENTHONG_DATA=str(data))
    assert by_data.returncode == 0 and "1 hubs, 2 agencies" in by_data.stdout, by_data.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    default = run("pki", "init", str(tmp_path / "c"), cwd=elsewhere)
    assert default.returncode == 0 and "4 hubs, 12 agencies" in default.stdout, default.stderr


def test_a_topology_named_but_missing_is_an_error_naming_it(tmp_path: Path) -> None:
    """A flag or a variable naming a missing file is CONFIG naming it, never a silent fall-back."""
    for args, env in ((("--topology", str(tmp_path / "nope.yaml")), {}),
                      ((), {"LIENTHONG_TOPOLOGY": str(tmp_path / "gone.yaml")})):
        done = run("pki", "init", str(tmp_path / "pki"), *args, cwd=tmp_path, **env)
        assert done.returncode == 2 and done.stderr.startswith("ERROR CONFIG: no topology file found; looked at: ")
        assert ("nope.yaml" if args else "LIENTHONG_TOPOLOGY=") in done.stderr
