"""The fictitious directories of the nation's size (bench/directory_gen.py) have the shapes issue 30
states, valid codes and Vietnamese names, and read back through Topology.load as generated.  The
generator is run as a person runs it (a command), not imported: tests do not import bench code."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from broker.core import topology as topology_module
from broker.core.topology import Topology

ROOT = Path(__file__).resolve().parents[1]

CODE = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[GH]\d{2}")  # QĐ 20/2020: V1V2V3.Z1Z2.Y1Y2.<level 1>


def generated(shape: str, path: Path, *options: str) -> Path:
    """``python bench/directory_gen.py SHAPE -o PATH [OPTIONS]``, as a person runs it."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "directory_gen.py"), shape, "-o", str(path), *options],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize(("shape", "hubs", "agencies", "tiers"), [
    ("today", 35, 4145, {"national": 1, "province": 34}),
    ("2019", 757, 12510, {"national": 1, "province": 63, "district": 693}),
])
def test_the_shapes_of_the_nation(shape: str, hubs: int, agencies: int, tiers: dict[str, int],
                                  tmp_path: Path) -> None:
    """Today's two tiers (national + 34 provinces, 99 central agencies, per province its committee,
    20 departments and 98 communes) and 2019's three (63 provinces, 693 district hubs, 10,395
    communes): the counts, codes in the QĐ 20/2020 format, each agency's parent in the directory,
    names in NFC with their diacritics, and a tree lienthong accepts."""
    topo = Topology.load(generated(shape, tmp_path / f"{shape}.json"))
    assert (len(topo.hubs), len(topo.agencies)) == (hubs, agencies)
    assert {t: sum(1 for h in topo.hubs.values() if h.tier == t) for t in tiers} == tiers
    levels = [a.level for a in topo.agencies.values()]
    assert levels.count("ministry") == 99
    assert levels.count("commune") == (3332 if shape == "today" else 10395)
    assert all(CODE.fullmatch(code) for code in topo.agencies)
    assert all(unicodedata.is_normalized("NFC", a.name) for a in topo.agencies.values())
    assert topo.agencies["000.00.00.H41"].name == "UBND tỉnh Nghệ An"
    assert topo.agencies["000.00.00.H29"].name == "UBND thành phố Hồ Chí Minh"
    assert all(a.parent in topo.agencies for a in topo.agencies.values() if a.level in ("commune", "department"))
    if shape == "today":
        assert all(CODE.fullmatch(a.old_code) for a in topo.agencies.values() if a.level == "commune")


def test_the_file_reads_back_as_generated_with_either_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's shape written to YAML reads back through Topology.load (libyaml's parser where PyYAML
    has it) equal to what PyYAML's pure-Python parser reads, and to the same written as JSON; the
    namespace and broker URL asked for are in it."""
    options = ("--namespace", "ltgen", "--amqp-url", "amqps://127.0.0.1:5701/")
    path = generated("today", tmp_path / "today.yaml", *options)
    fast = Topology.load(path)
    assert fast.namespace == "ltgen"
    assert {h.amqp_url for h in fast.hubs.values()} == {"amqps://127.0.0.1:5701/"}
    monkeypatch.setattr(topology_module, "_LOADER", yaml.SafeLoader)
    assert Topology.load(path) == fast
    assert Topology.load(generated("today", tmp_path / "today.json", *options)) == fast


def test_a_json_topology_that_is_not_json_is_a_config_error(tmp_path: Path) -> None:
    """A ``.json`` topology is read as JSON: a file that is not stops the load with CONFIG naming it."""
    from broker.core.errors import ConfigError

    (tmp_path / "t.json").write_text("hubs: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"t.json is not valid JSON"):
        Topology.load(tmp_path / "t.json")
