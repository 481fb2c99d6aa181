"""How long reading the nation's directory takes, beside PyYAML's pure-Python parser, in one run.

    python bench/directory_load.py [--repeat 5]

For both generated shapes (``bench/directory_gen.py``: today's 4,145 agencies, 2019's 12,510) it
times, on the same file: ``Topology.load`` as lienthong does it (libyaml's ``CSafeLoader`` where
PyYAML has it); the same with PyYAML's pure-Python ``SafeLoader`` (the baseline: what ``load``
did before); and the same directory as a ``.json`` file, which ``Topology.load`` reads with
``json`` (the floor a YAML parser cannot go below).  The figure is the median of ``--repeat``
loads; the fastest is shown beside it (the machine is shared: the median moves with its load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.directory_gen import generate, write  # noqa: E402
from broker.core.topology import Topology  # noqa: E402


def timed(fn: Callable[[], Topology], repeat: int) -> tuple[float, float, Topology]:
    times, topo = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        topo = fn()
        times.append(time.perf_counter() - start)
    assert topo is not None
    return statistics.median(times), min(times), topo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"PyYAML {yaml.__version__}, libyaml: {yaml.__with_libyaml__}")
    print("| shape | hubs | agencies | YAML size | pure-Python YAML s | lienthong (libyaml) s | JSON s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in ("today", "2019"):
            raw = generate(shape)
            path, as_json = Path(tmp) / f"{shape}.yaml", Path(tmp) / f"{shape}.json"
            write(raw, path)
            write(raw, as_json)
            pure = timed(lambda p=path: Topology.from_dict(
                yaml.load(p.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), source=str(p)), args.repeat)
            ours = timed(lambda p=path: Topology.load(p), args.repeat)
            floor = timed(lambda p=as_json: Topology.load(p), args.repeat)
            assert pure[2] == ours[2] == floor[2], "the loaders disagree"
            cells = " | ".join(f"{med:.2f} (best {best:.2f})" for med, best, _ in (pure, ours, floor))
            print(f"| {shape} | {len(ours[2].hubs)} | {len(ours[2].agencies):,} | {path.stat().st_size / 1e6:.1f} MB "
                  f"| {cells} |")


if __name__ == "__main__":
    main()
