"""The work of the four hubs for one document, receipts included, beside its floor, in one run.

    python bench/hop_path.py [--bundle 8] [--seconds 3]

No broker and no store: each hub's ``Hop`` on the bytes and headers the hub before it produced,
one core, single-threaded.  A 10 KB document goes H41 -> national -> H14 -> H14-D31; the accepted
receipt is written at H41, the delivered one at H14-D31, where ``--bundle`` documents' receipts
leave as one bundle that H14 and national forward and H41 opens.  Per hub and per document:

- path: ``Hop.process`` (and ``Hop.bundle`` at H14-D31), as the workers run it;
- floor: only the primitives that work needs and cannot share between hubs: parse, schema,
  exclusive C14N and SHA-256 of the document, the sender's RSA verification, one ECDSA
  verification per hop record received and one signature per record or receipt written; at H41
  the receipt's parse, C14N and ECDSA verification, and the bundle's records amortized.

What lies between the two is Python: reading the message, policy, routing, records, receipts.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
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
from broker.core.outcome import Inbound  # noqa: E402
from broker.core.parsing import parse  # noqa: E402
from broker.core.signer import SigningKey  # noqa: E402
from broker.settings import PkiLayout  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=int, default=8, help="documents whose delivered receipts share a bundle")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per figure")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hubs = Hubs.make(Path(tmp))
        hops = hubs.hops
        keys = {h: hop.key for h, hop in hops.items()}
        agency = SigningKey.load(*PkiLayout(hubs.pki).agency(SENDER))

        def documents() -> list[bytes]:
            return [hubs.document(f"đo {i}") for i in range(a.bundle)]

        spent = dict.fromkeys(PATH, 0.0)
        rounds = [0]

        def path_round() -> None:
            """``--bundle`` fresh documents through the four hubs, then their receipts back."""
            held = []
            for body in documents():
                inbound = Inbound(body, {}, wire.agency_exchange(SENDER))
                for here in PATH:
                    start = time.perf_counter()
                    out = hops[here].process(inbound)
                    spent[here] += time.perf_counter() - start
                    if here == PATH[-1]:
                        held += [c for c in out.copies if c.target.kind == "hub"]
                    else:
                        [onward] = [c for c in out.copies if c.headers.get(wire.H_KIND) == "edxml"]
                        inbound = Inbound(body, onward.headers, wire.link_exchange(here))
            start = time.perf_counter()
            [(bundle, _)] = hops[PATH[-1]].bundle(held)
            spent[PATH[-1]] += time.perf_counter() - start
            came_from = PATH[-1]
            for here in ("H14", "national", "H41"):
                start = time.perf_counter()
                out = hops[here].process(Inbound(bundle.body, bundle.headers, wire.link_exchange(came_from)))
                spent[here] += time.perf_counter() - start
                if here != "H41":
                    [bundle], came_from = out.copies, here
            assert len(out.copies) == a.bundle, "H41 did not deliver every receipt of the bundle"
            rounds[0] += 1

        path_round()
        spent, rounds[0] = dict.fromkeys(PATH, 0.0), 0
        deadline = time.perf_counter() + a.seconds * len(PATH)
        while time.perf_counter() < deadline:
            path_round()
        path = {h: spent[h] / (rounds[0] * a.bundle) * 1e6 for h in PATH}

        # the floor's pieces, each timed on the same kind of bytes
        body = documents()[0]
        tree = parse(body)
        assert isinstance(agency.key, rsa.RSAPrivateKey)
        public = agency.key.public_key()
        signed_info = b"x" * 600
        rsa_sig = agency.key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())
        hub_key = keys["H41"].key
        assert isinstance(hub_key, ec.EllipticCurvePrivateKey)
        record = b"r" * 480
        ec_sig = hub_key.sign(record, ec.ECDSA(hashes.SHA256()))
        receipt = receipts.build(receipts.Receipt("delivered", "H14-D31", utc_now(), "d", "0" * 64, SENDER, (FAR,)),
                                 keys["H14-D31"])
        s = a.seconds / 2
        check = per_call_us(lambda: (hashlib.sha256(body).digest(), schema.validate(parse(body).getroot()),
                                     hashlib.sha256(canonicalize(tree, EXC_C14N)).digest(),
                                     public.verify(rsa_sig, signed_info, padding.PKCS1v15(), hashes.SHA256())), s)
        verify = per_call_us(lambda: hub_key.public_key().verify(ec_sig, record, ec.ECDSA(hashes.SHA256())), s)
        signing = per_call_us(lambda: hub_key.sign(record, ec.ECDSA(hashes.SHA256())), s)
        receipt_signed_info = parse(receipt).getroot().find(f"{DS}Signature/{DS}SignedInfo")
        assert receipt_signed_info is not None
        open_receipt = per_call_us(lambda: canonicalize(parse(receipt), EXC_C14N), s) + \
            per_call_us(lambda: canonicalize(receipt_signed_info, EXC_C14N), s) + verify
        per_bundle = 1 / a.bundle
        floor = {
            "H41": check + signing + signing + open_receipt + verify * per_bundle,
            "national": check + verify + signing + verify * per_bundle,
            "H14": check + 2 * verify + signing + verify * per_bundle,
            "H14-D31": check + 3 * verify + 3 * signing + signing * per_bundle,
        }
        print(f"10 KB document, receipts in bundles of {a.bundle}; us per document, one core")
        print(f"{'hub':>10} {'path':>8} {'floor':>8} {'path/floor':>11}")
        for h in PATH:
            print(f"{h:>10} {path[h]:8.0f} {floor[h]:8.0f} {path[h] / floor[h]:10.2f}x")
        total, total_floor = sum(path.values()), sum(floor.values())
        print(f"{'all hubs':>10} {total:8.0f} {total_floor:8.0f} {total / total_floor:10.2f}x")


if __name__ == "__main__":
    main()
