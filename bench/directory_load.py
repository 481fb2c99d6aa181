"""How long reading the nation's directory takes, beside PyYAML's pure-Python parser, in one run.

    python bench/directory_load.py [--repeat 5]

For both generated shapes (``bench/directory_gen.py``: today's 4,145 agencies, 2019's 12,510) it
times, on the same file: ``Topology.load`` as lienthong does it (libyaml's ``CSafeLoader`` where
PyYAML has it); the same with PyYAML's pure-Python ``SafeLoader`` (the baseline: what ``load``
did before); and the same directory as a ``.json`` file, which ``Topology.load`` reads with
``json`` (the floor a YAML parser cannot go below); and the same directory signed, as a hub
receives it over its links (``broker.core.directory.read``: the authority's ECDSA signature, its
chain to the root and CRL, then the payload read as a topology and each hub's certificate), made
with a throwaway root, authority and hub certificates.  The figure is the median of ``--repeat``
loads; the fastest is shown beside it (the machine is shared: the median moves with its load).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.directory_gen import generate, write  # noqa: E402
from broker.core import directory  # noqa: E402
from broker.core.signer import SigningKey  # noqa: E402
from broker.core.topology import Topology  # noqa: E402
from broker.core.trust import TrustStore, fingerprint  # noqa: E402
from broker.relay import devpki  # noqa: E402


def timed(fn: Callable[[], Topology], repeat: int) -> tuple[float, float, Topology]:
    times, topo = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        topo = fn()
        times.append(time.perf_counter() - start)
    assert topo is not None
    return statistics.median(times), min(times), topo


def signed(raw: dict, root: devpki.Issued, authority: devpki.Issued) -> bytes:
    """``raw`` signed as a directory, with an EC certificate of the throwaway root for each hub."""
    certs: dict[str, x509.Certificate] = {
        h["id"]: devpki.issue(root, f"hub {h['id']}", uid=f"hub:{h['id']}", kind="ec").cert for h in raw["hubs"]}
    payload = directory.payload_of(raw, version=1, issued=datetime.now(UTC), hub_certificates=certs)
    return directory.sign(payload, SigningKey(authority.key, authority.cert, ()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"PyYAML {yaml.__version__}, libyaml: {yaml.__with_libyaml__}")
    print("| shape | hubs | agencies | YAML size | pure-Python YAML s | lienthong (libyaml) s | JSON s "
          "| signed directory | verify + read s |")
    print("|---|---|---|---|---|---|---|---|---|")
    root = devpki.make_root()
    authority = devpki.issue(root, "directory authority", uid="directory:bench", kind="ec")
    trust = TrustStore(anchors=(root.cert,), intermediates=(), crls=(devpki.make_crl(root),))
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
            data = signed(raw, root, authority)
            checked = timed(lambda d=data: directory.read(d, trust=trust, authorities=[fingerprint(authority.cert)]
                                                          ).topology, args.repeat)
            assert pure[2] == ours[2] == floor[2] == checked[2], "the loaders disagree"
            cells = " | ".join(f"{med:.2f} (best {best:.2f})" for med, best, _ in (pure, ours, floor))
            print(f"| {shape} | {len(ours[2].hubs)} | {len(ours[2].agencies):,} | {path.stat().st_size / 1e6:.1f} MB "
                  f"| {cells} | {len(data) / 1e6:.1f} MB | {checked[0]:.2f} (best {checked[1]:.2f}) |")


if __name__ == "__main__":
    main()
