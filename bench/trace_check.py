"""What the whole-trace check costs a hub, beside the last-record check it replaced, in one run.

    python bench/trace_check.py [--seconds 2]

A 10 KB document crosses the four hubs of config/topology.yaml (H41 -> national -> H14 -> H14-D31),
so the hub at depth n receives a trace of n records.  For each depth it measures, on the same
trace: ``last`` (the old check: chain and digests, the newest record's signature), ``full`` (every
record's signature, and that the hubs form a path of the topology), and the whole hop
(``Hop.process``: parse, schema, signature, chain, the full trace check, routing, the hop record)
for scale.  One core, single-threaded.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.core import wire  # noqa: E402
from broker.core.edxml import Organ, build_document  # noqa: E402
from broker.core.hop import Hop  # noqa: E402
from broker.core.hoprecords import check_path, verify_trace  # noqa: E402
from broker.core.outcome import Inbound  # noqa: E402
from broker.core.signer import SigningKey, sign  # noqa: E402
from broker.core.topology import Topology  # noqa: E402
from broker.relay import devpki  # noqa: E402
from broker.settings import PkiLayout  # noqa: E402
from tests import hops  # noqa: E402

SENDER, FAR = "000.00.51.H41", "001.00.31.H14"
PATH = ("H41", "national", "H14", "H14-D31")


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n * 1e6


@dataclass
class Hubs:
    """The four hubs of :data:`PATH` with a dev PKI, as their workers would hold them."""

    topology: Topology
    pki: Path
    hops: dict[str, Hop]

    @classmethod
    def make(cls, where: Path) -> Hubs:
        topology = Topology.load(ROOT / "config" / "topology.yaml")
        pki = devpki.init(where / "pki", topology)
        every = hops.hops(pki, topology)
        return cls(topology, pki, {h: every[h] for h in PATH})

    def document(self, subject: str = "đo", attachment: int = 7000) -> bytes:
        """A signed document from a commune of Nghệ An to a commune of Cao Bằng: 10 KB with the
        default ``attachment`` (its bytes before base64)."""
        return sign(build_document(Organ(SENDER, "xã"), [Organ(FAR, "xã")], subject=subject,
                                   attachments=[("a.bin", "application/octet-stream", os.urandom(attachment))]),
                    self.sender_key)

    @functools.cached_property
    def sender_key(self) -> SigningKey:
        return SigningKey.load(*PkiLayout(self.pki).agency(SENDER))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hubs = Hubs.make(Path(tmp))
        topology, hops = hubs.topology, hubs.hops
        certs = next(iter(hops.values())).hub_certs
        trust = next(iter(hops.values())).trust
        body = hubs.document()
        digest = hashlib.sha256(body).hexdigest()
        inbound = Inbound(body, {}, wire.agency_exchange(SENDER))
        print(f"{'hub (records in)':22} {'last, us':>10} {'full, us':>10} {'extra, us':>10} {'whole hop, us':>14}")
        for depth, here in enumerate(PATH):
            trace = list(inbound.headers.get(wire.H_TRACE) or [])
            if trace:
                last = per_call_us(lambda t=trace: verify_trace(t, certs, digest, trust=trust, signatures="last"),
                                   a.seconds)
                full = per_call_us(lambda t=trace, h=here: check_path(
                    verify_trace(t, certs, digest, trust=trust), topology.neighbours, "H41", h), a.seconds)
                figures = f"{last:10.0f} {full:10.0f} {full - last:10.0f}"
            else:
                figures = f"{'-':>10} {'-':>10} {'-':>10}"
            whole = per_call_us(lambda i=inbound, h=here: hops[h].process(i), a.seconds)
            print(f"{here + f' ({depth})':22} {figures} {whole:14.0f}")
            outcome = hops[here].process(inbound)
            [onward] = [c for c in outcome.copies if c.headers.get(wire.H_KIND) == "edxml"]
            inbound = Inbound(body, onward.headers, wire.link_exchange(here))


if __name__ == "__main__":
    main()
