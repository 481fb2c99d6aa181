"""The hop path at the nation's size, beside its floor, in one run.

    python bench/hop_nation.py [--documents 2000] [--round 256] [--batch 8] [--shape today]

``bench/hop_path.py`` measures four hubs on one path; this runs today's whole directory
(``bench/directory_gen.py``: the national hub and 34 provinces, 4,145 agencies) or 2019's, with
a dev PKI of ECDSA agency keys (RSA keys for four thousand agencies take minutes to make), no
broker and no store, one core.  Each document goes from a random agency to a random agency of
another hub (Nghệ An's commune to Cao Bằng's: province -> national -> province), 10 KB.

After a warm-up in which every agency sends one document (so that, as on a hub that has run for
a day, each sender's chain is known where it goes), documents are sent ``--round`` at a time, as
many as are in flight while a hub holds its receipts: each hub judges what reaches it in batches
of ``--batch`` inside ``Hop.sealing()``, as the workers do; at the end of the round each hub
bundles the delivered receipts it holds (``Hop.bundle``: one message per neighbour and home hub),
and they travel back until their agencies' hubs open them.  Traffic spread over 35 hubs makes
bundles small: the bench prints how many receipts a receipt message carried.

The floor is the goals' (``bench/hop_path.py``), counted here from what each hub did: a check per
document judged (parse, schema, C14N and SHA-256, the sender's signature verified with its key's
algorithm), a verification per hop record received (a document's trace, a receipt's or a
bundle's ``lt-issued``), a signature per record and per receipt written, and a receipt's parse,
C14N and verification where it is put into its agency's inbox; each round's operations are priced
with those primitives measured right after it, so that path and floor see the machine at one pace.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.directory_gen import generate  # noqa: E402
from bench.hop_path import primitives_of  # noqa: E402
from broker.core import wire  # noqa: E402
from broker.core.edxml import Organ, build_document  # noqa: E402
from broker.core.hop import Hop  # noqa: E402
from broker.core.outcome import Copy, Inbound  # noqa: E402
from broker.core.routing import PARKING, TargetKind  # noqa: E402
from broker.core.signer import SigningKey, sign  # noqa: E402
from broker.core.topology import Topology  # noqa: E402
from broker.relay import devpki  # noqa: E402
from broker.settings import PkiLayout  # noqa: E402
from tests import hops as test_hops  # noqa: E402

OPS = ("check", "verify", "signing", "open_receipt")


class Network:
    """Every hub of a directory as its worker would hold it, and what each did, counted."""

    def __init__(self, topology: Topology, pki: Path, batch: int) -> None:
        self.topology, self.pki, self.batch = topology, pki, batch
        self.hops: dict[str, Hop] = test_hops.hops(pki, topology)
        self.spent: Counter[str] = Counter()  # seconds per hub
        self.ops: dict[str, Counter[str]] = defaultdict(Counter)  # per hub: floor operations
        self.receipt_messages: Counter[int] = Counter()  # receipts a receipt message carried -> messages
        self.refused = 0

    def judge(self, here: str, inbounds: list[Inbound], *, documents: bool) -> list[Copy]:
        """``inbounds`` (all ``documents``, or all receipts and bundles) judged at ``here`` in
        batches, timed; the operations of the floor counted."""
        hop, out = self.hops[here], []
        start = time.perf_counter()
        for k in range(0, len(inbounds), self.batch):
            with hop.sealing() as records:
                outcomes = [hop.process(i) for i in inbounds[k:k + self.batch]]
            out += [c for o in outcomes for c in records.resolve(o).copies]
        self.spent[here] += time.perf_counter() - start
        ops = self.ops[here]
        for i in inbounds:
            if wire.kind_of(i.headers) == wire.Kind.EDXML:
                ops["check"] += 1
                ops["verify"] += len(i.headers.get(wire.H_TRACE, ()))
                ops["signing"] += 1  # its hop record
            else:
                ops["verify"] += 1  # the lt-issued of a receipt or a bundle
        for c in out:
            self.refused += c.target == PARKING
            if c.headers.get(wire.H_KIND) != wire.Kind.RECEIPT:
                continue
            if documents:  # a receipt this hub wrote: its XML signature, and lt-issued when it leaves
                ops["signing"] += 2 if c.target.kind == TargetKind.HUB else 1
            elif c.target.kind == TargetKind.INBOX:  # from another hub into its agency's inbox: checked
                ops["open_receipt"] += 1
        return out

    def bundle(self, here: str, held: list[Copy]) -> list[Copy]:
        start = time.perf_counter()
        out = self.hops[here].bundle(held)
        self.spent[here] += time.perf_counter() - start
        for copy, members in out:
            self.receipt_messages[len(members)] += 1
            if copy.headers.get(wire.H_KIND) == wire.Kind.BUNDLE:
                self.ops[here]["signing"] += 1
        return [c for c, _ in out]


def one_round(net: Network, documents: list[tuple[str, bytes]]) -> None:
    """``documents`` (sender, signed bytes) across the network, then their receipts back."""
    topology = net.topology
    pending: dict[str, list[Inbound]] = defaultdict(list)
    for sender, body in documents:
        pending[topology.agency(sender).hub].append(Inbound(body, {}, wire.agency_exchange(sender)))
    held: dict[str, list[Copy]] = defaultdict(list)
    while pending:  # documents, hub by hub, until every copy is in an inbox
        here, inbounds = pending.popitem()
        copies = net.judge(here, inbounds, documents=True)
        for c in copies:
            if c.bundled:
                held[here].append(c)
            elif c.target.kind == TargetKind.HUB:
                pending[c.target.name].append(Inbound(c.body, c.headers, wire.link_exchange(here)))
    for here, copies in held.items():  # each hub's receipts for other hubs' agencies, bundled
        for c in net.bundle(here, copies):
            pending[c.target.name].append(Inbound(c.body, c.headers, wire.link_exchange(here)))
    while pending:  # receipts and bundles on their way home
        here, inbounds = pending.popitem()
        for c in net.judge(here, inbounds, documents=False):
            if c.target.kind == TargetKind.HUB:
                pending[c.target.name].append(Inbound(c.body, c.headers, wire.link_exchange(here)))


def primitives_us(net: Network, sender: str, seconds: float) -> dict[str, float]:
    """The floor's operations, µs each (``bench/hop_path.py``), on a document of ``sender``."""
    agency = SigningKey.load(*PkiLayout(net.pki).agency(sender))
    return primitives_of(agency, document(net.topology, agency, sender, sender, "đo"), net.hops["national"].key,
                         seconds=seconds)


def document(topology: Topology, key: SigningKey, sender: str, recipient: str, subject: str) -> bytes:
    """A signed 10 KB document (7,000 bytes of attachment before base64)."""
    names = {a: topology.agencies[a].name for a in (sender, recipient)}
    return sign(build_document(Organ(sender, names[sender]), [Organ(recipient, names[recipient])], subject=subject,
                               attachments=[("a.bin", "application/octet-stream", os.urandom(7000))]), key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--documents", type=int, default=2000, help="documents measured (after one round of warm-up)")
    ap.add_argument("--round", type=int, default=256, help="documents in flight while hubs hold their receipts")
    ap.add_argument("--batch", type=int, default=8, help="deliveries a hub judges together")
    ap.add_argument("--shape", choices=["today", "2019"], default="today")
    ap.add_argument("--seed", type=int, default=20261207)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        topology = Topology.from_dict(generate(a.shape))
        pki = devpki.init(Path(tmp) / "pki", topology, agency_keys="ec")
        net = Network(topology, pki, a.batch)
        codes = sorted(topology.agencies)
        print(f"{a.shape}: {len(topology.hubs)} hubs, {len(codes)} agencies; directory, dev PKI and hubs in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        keys: dict[str, SigningKey] = {}

        def traffic(n: int, senders: list[str] | None = None) -> list[tuple[str, bytes]]:
            out: list[tuple[str, bytes]] = []
            while len(out) < n:
                sender = senders[len(out)] if senders else rng.choice(codes)
                recipient = rng.choice(codes)
                if topology.agencies[sender].hub == topology.agencies[recipient].hub:
                    continue
                key = keys.get(sender) or keys.setdefault(sender, SigningKey.load(*PkiLayout(pki).agency(sender)))
                out.append((sender, document(topology, key, sender, recipient, f"đo {len(out)}")))
            return out

        # warm: every hub's code, and a document from each agency, so that each sender's certificate
        # and chain are known where they go, as on a hub that has run for a day (a signer met for the
        # first time has its chain built and its CRL consulted: not the floor's work, nor the steady state)
        for k in range(0, len(codes), a.round):
            senders = codes[k:k + a.round]
            one_round(net, traffic(len(senders), senders))
        net.spent.clear(), net.ops.clear(), net.receipt_messages.clear()
        # each round's floor is priced with primitives measured right after it: the machine's pace
        # changes within a minute, and path and floor must see the same pace
        floor: Counter[str] = Counter()  # per hub, seconds
        spent: Counter[str] = Counter()
        counted: Counter[str] = Counter()  # floor operations, all hubs
        ratios: list[float] = []
        units: list[dict[str, float]] = []
        done = 0
        while done < a.documents:
            batch = traffic(min(a.round, a.documents - done))
            one_round(net, batch)
            done += len(batch)
            unit = primitives_us(net, codes[len(codes) // 2], seconds=0.5)
            units.append(unit)
            priced = {h: sum(ops[o] * unit[o] for o in OPS) / 1e6 for h, ops in net.ops.items()}
            ratios.append(sum(net.spent.values()) / sum(priced.values()))
            floor.update(priced), spent.update(net.spent)
            counted.update(Counter({o: sum(ops[o] for ops in net.ops.values()) for o in OPS}))
            net.spent.clear(), net.ops.clear()
    national = ("national",)
    provinces = tuple(h for h in spent if h not in national)
    print(f"{done} documents between agencies of different hubs, {a.round} in flight, judged in batches of "
          f"{a.batch}; µs per document, one core; each round's floor priced right after it")
    print(f"{'hubs':>22} {'path':>7} {'floor':>7} {'path/floor':>11}")
    for name, hubs in (("national", national), (f"{len(provinces)} other hubs", provinces),
                       ("all hubs", (*national, *provinces))):
        path = sum(spent[h] for h in hubs) / done * 1e6
        fl = sum(floor.get(h, 0.0) for h in hubs) / done * 1e6
        print(f"{name:>22} {path:7.0f} {fl:7.0f} {path / fl:10.2f}x")
    ratios.sort()
    print(f"all hubs, round by round: {ratios[0]:.2f}x to {ratios[-1]:.2f}x over {len(ratios)} rounds")
    print("floor operations per document: " + ", ".join(f"{o} {counted[o] / done:.2f}" for o in OPS)
          + "; µs each (median of the rounds): "
          + ", ".join(f"{o} {statistics.median(u[o] for u in units):.0f}" for o in OPS))
    messages = sum(net.receipt_messages.values())
    carried = sum(k * v for k, v in net.receipt_messages.items())
    assert net.refused == 0, f"{net.refused} messages were refused: the figures would not be the path's"
    print(f"receipts for other hubs' agencies: {carried} in {messages} messages "
          f"({carried / messages:.1f} a message; {net.receipt_messages[1]} went alone)")


if __name__ == "__main__":
    main()
