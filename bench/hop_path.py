"""The work of the four hubs for one document, receipts included, beside its floor, in one run.

    python bench/hop_path.py [--batch 8] [--seconds 3] [--rounds 5]

No broker and no store: each hub's ``Hop`` on the bytes and headers the hub before it produced,
one core, single-threaded.  10 KB documents go H41 -> national -> H14 -> H14-D31, ``--batch`` of
them at a time; the accepted receipt is written at H41, the delivered one at H14-D31, where the
batch's receipts leave as one bundle that H14 and national forward and H41 opens.  Per hub and
per document:

- path: ``Hop.process`` (and ``Hop.bundle`` at H14-D31) as the workers run it: each hub judges
  the batch's deliveries together inside ``Hop.sealing()``, so the hop records it writes share one
  signature (docs/wire.md, version 2); beside it the same with batches of one delivery (receipts
  still in bundles of ``--batch``), each record then signed alone;
- floor: only the primitives that work needs and cannot share between hubs: parse, schema,
  exclusive C14N and SHA-256 of the document, the sender's RSA verification, one ECDSA
  verification per hop record received and one signature per record or receipt written; at H41
  the receipt's parse, C14N and ECDSA verification, and the bundle's records amortized.  This is
  the floor the speed goals are stated against (a record for each signature), kept as it was;
- batched floor: the same with the records' signatures and verifications as a batch needs them
  (one signature per batch at each hub, one verification per batch of an upstream hub's records).

What lies between path and floor is Python: reading the message, policy, routing, records, receipts.

The machine's pace changes within a minute (two shared cores): path, batch of 1 and floor are
measured one after the other in each of ``--rounds`` short rounds, each ratio is taken within its
round, and the medians are printed with the lowest and highest round's ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402

from bench.trace_check import FAR, PATH, SENDER, Hubs, per_call_us  # noqa: E402
from broker.core import receipts, schema, wire  # noqa: E402
from broker.core.algorithms import DS, EXC_C14N  # noqa: E402
from broker.core.canon import canonicalize  # noqa: E402
from broker.core.hoprecords import utc_now  # noqa: E402
from broker.core.outcome import Copy, Inbound  # noqa: E402
from broker.core.parsing import parse  # noqa: E402
from broker.core.signer import SigningKey  # noqa: E402
from broker.settings import PkiLayout  # noqa: E402


def primitives_of(agency: SigningKey, body: bytes, hub: SigningKey, *, seconds: float) -> dict[str, float]:
    """What the floor is made of, µs per call (module docstring): ``check`` (``body``'s parse,
    schema, C14N, SHA-256 and the verification of ``agency``'s signature, RSA or ECDSA as its key
    is), ``verify`` and ``signing`` of a record with ``hub``'s key, and ``open_receipt`` (a
    receipt's parse and C14N, its SignedInfo's C14N, a verification)."""
    tree = parse(body)
    public = agency.key.public_key()
    signed_info = b"x" * 600
    if isinstance(agency.key, rsa.RSAPrivateKey):
        assert isinstance(public, rsa.RSAPublicKey)
        rsa_sig, rsa_public = agency.key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256()), public

        def sender() -> None:
            rsa_public.verify(rsa_sig, signed_info, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(agency.key, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey)
        ec_sender_sig, ec_public = agency.key.sign(signed_info, ec.ECDSA(hashes.SHA256())), public

        def sender() -> None:
            ec_public.verify(ec_sender_sig, signed_info, ec.ECDSA(hashes.SHA256()))
    hub_key = hub.key
    assert isinstance(hub_key, ec.EllipticCurvePrivateKey)
    record = b"r" * 480
    ec_sig = hub_key.sign(record, ec.ECDSA(hashes.SHA256()))
    receipt = receipts.build(receipts.Receipt("delivered", "hub", utc_now(), "d", "0" * 64, SENDER, (FAR,)), hub)
    receipt_signed_info = parse(receipt).getroot().find(f"{DS}Signature/{DS}SignedInfo")
    assert receipt_signed_info is not None
    s = seconds / 4
    verify = per_call_us(lambda: hub_key.public_key().verify(ec_sig, record, ec.ECDSA(hashes.SHA256())), s)
    return {
        "check": per_call_us(lambda: (hashlib.sha256(body).digest(), schema.validate(parse(body).getroot()),
                                      hashlib.sha256(canonicalize(tree, EXC_C14N)).digest(), sender()), s),
        "verify": verify,
        "signing": per_call_us(lambda: hub_key.sign(record, ec.ECDSA(hashes.SHA256())), s),
        "open_receipt": per_call_us(lambda: canonicalize(parse(receipt), EXC_C14N), s / 2)
        + per_call_us(lambda: canonicalize(receipt_signed_info, EXC_C14N), s / 2) + verify,
    }


def primitives_us(hubs: Hubs, *, seconds: float = 1.5, attachment: int = 7000) -> dict[str, float]:
    """:func:`primitives_of` for the four hubs' documents (an RSA agency of Nghệ An)."""
    return primitives_of(SigningKey.load(*PkiLayout(hubs.pki).agency(SENDER)), hubs.document("đo", attachment),
                         hubs.hops["H41"].key, seconds=seconds)


def floor_of(p: Mapping[str, float], *, bundle: int, batch: int = 1) -> dict[str, float]:
    """Each hub's floor, µs per document, from the :func:`primitives_us` ``p``: with ``batch`` 1
    the goals' floor, a signature per record; larger, what a batch of that many deliveries needs
    of the records."""
    check, verify, signing = p["check"], p["verify"], p["signing"]

    def records(written: int) -> float:
        """Signing the records a hub writes per document: one each, or one per batch for all."""
        return written * signing if batch == 1 else signing / batch

    received = verify / batch  # per upstream hub's record: one verification per batch of them
    per_bundle = 1 / bundle
    return {
        "H41": check + records(1) + signing + p["open_receipt"] + verify * per_bundle,
        "national": check + received + records(1) + verify * per_bundle,
        "H14": check + 2 * received + records(1) + verify * per_bundle,
        "H14-D31": check + 3 * received + records(2) + signing + signing * per_bundle,
    }


def floor_us(hubs: Hubs, *, bundle: int, batch: int = 1, seconds: float = 1.5,
             attachment: int = 7000) -> dict[str, float]:
    """Each hub's floor, µs per document (:func:`floor_of`), measured now."""
    return floor_of(primitives_us(hubs, seconds=seconds, attachment=attachment), bundle=bundle, batch=batch)


def path_us(hubs: Hubs, *, batch: int, bundle: int, seconds: float) -> dict[str, float]:
    """Each hub's warm path, µs per document: ``bundle`` documents a round, judged ``batch`` at
    a time, their delivered receipts in one bundle."""
    hops = hubs.hops
    spent = dict.fromkeys(PATH, 0.0)
    done = [0]

    def judged(here: str, inbounds: list[Inbound]) -> list[list[Copy]]:
        hop, copies = hops[here], []
        start = time.perf_counter()
        for k in range(0, len(inbounds), batch):
            with hop.sealing() as records:
                outcomes = [hop.process(i) for i in inbounds[k:k + batch]]
            copies += [list(records.resolve(o).copies) for o in outcomes]
        spent[here] += time.perf_counter() - start
        return copies

    def one_round() -> None:
        """``bundle`` fresh documents through the four hubs, then their receipts back as one bundle."""
        bodies = [hubs.document(f"đo {i}") for i in range(bundle)]
        inbounds = [Inbound(b, {}, wire.agency_exchange(SENDER)) for b in bodies]
        for here in PATH[:-1]:
            onward = [next(c for c in copies if c.headers.get(wire.H_KIND) == "edxml")
                      for copies in judged(here, inbounds)]
            inbounds = [Inbound(c.body, c.headers, wire.link_exchange(here)) for c in onward]
        held = [c for copies in judged(PATH[-1], inbounds) for c in copies if c.target.kind == "hub"]
        start = time.perf_counter()
        [(receipts_, _)] = hops[PATH[-1]].bundle(held)
        spent[PATH[-1]] += time.perf_counter() - start
        came_from = PATH[-1]
        for here in ("H14", "national", "H41"):
            [copies] = judged(here, [Inbound(receipts_.body, receipts_.headers, wire.link_exchange(came_from))])
            if here != "H41":
                [receipts_], came_from = copies, here
        assert len(copies) == bundle, "H41 did not deliver every receipt of the bundle"
        done[0] += bundle

    one_round()
    spent, done[0] = dict.fromkeys(PATH, 0.0), 0
    deadline = time.perf_counter() + seconds * len(PATH)
    while time.perf_counter() < deadline:
        one_round()
    return {h: spent[h] / done[0] * 1e6 for h in PATH}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8,
                    help="documents each hub judges together, whose delivered receipts share a bundle")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per figure, over all rounds")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds, each measuring the path, batch of 1 and floor one after the other")
    a = ap.parse_args()
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        hubs = Hubs.make(Path(tmp))
        path_us(hubs, batch=a.batch, bundle=a.batch, seconds=0.1)  # warm
        s = a.seconds / a.rounds
        for _ in range(a.rounds):  # the machine changes pace within a minute: each round sees one pace
            alone = path_us(hubs, batch=1, bundle=a.batch, seconds=s / 2)
            path = path_us(hubs, batch=a.batch, bundle=a.batch, seconds=s)
            p = primitives_us(hubs, seconds=s)
            rounds.append({"path": path, "alone": alone, "floor": floor_of(p, bundle=a.batch),
                           "batched": floor_of(p, bundle=a.batch, batch=a.batch)})
    for r in rounds:
        for figures in r.values():
            figures["all hubs"] = sum(figures.values())

    def median(what: str, hub: str) -> float:
        return statistics.median(r[what][hub] for r in rounds)

    def ratio(over: str, hub: str) -> list[float]:
        return sorted(r["path"][hub] / r[over][hub] for r in rounds)

    print(f"10 KB documents judged in batches of {a.batch}, their receipts in one bundle; µs per document, "
          f"one core; medians of {a.rounds} rounds, each ratio taken within its round (lowest-highest)")
    print(f"{'hub':>10} {'path':>7} {'batch 1':>8} {'floor':>7} {'path/floor':>20} {'batched floor':>14} "
          f"{'path/batched':>20}")
    for h in (*PATH, "all hubs"):
        f, b = ratio("floor", h), ratio("batched", h)
        print(f"{h:>10} {median('path', h):7.0f} {median('alone', h):8.0f} {median('floor', h):7.0f} "
              f"{statistics.median(f):6.2f}x ({f[0]:.2f}-{f[-1]:.2f}) {median('batched', h):14.0f} "
              f"{statistics.median(b):6.2f}x ({b[0]:.2f}-{b[-1]:.2f})")


if __name__ == "__main__":
    main()
