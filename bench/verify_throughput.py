"""Validate + verify throughput on one core, beside the raw floor and signxml, in one run.

    python bench/verify_throughput.py [--seconds 2]

For each size (10 KB, 100 KB, 1 MB) it measures, on the same signed bytes:
- lienthong: the full check of a hub (parse, XSD, model, signature, chain,
  CRL, signer = From) via ``broker.validation.check``;
- floor: lxml parse + exclusive C14N + SHA-256 + one RSA-2048 verify, the
  least any verifier must do;
- signxml: ``XMLVerifier().verify`` (signature and chain only).
Run single-threaded; pin to one core with ``taskset -c 0`` for a clean figure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from broker.core.edxml import Organ, build_document
from broker.core.signer import SigningKey, sign
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.relay import devpki

SIZES = {"10 KB": 10_000, "100 KB": 100_000, "1 MB": 1_000_000}


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def document(size: int) -> bytes:
    body = os.urandom(max(0, (size - 2500) * 3 // 4))  # base64 grows by 4/3; ~2.5 KB of header
    return build_document(Organ("000.00.00.G22", "Văn phòng Chính phủ"), [Organ("000.00.00.H41", "UBND tỉnh Nghệ An")],
                          subject="Benchmark", attachments=[("a.bin", "application/octet-stream", body)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    args = ap.parse_args()
    import signxml

    topo = Topology.load(Path(__file__).resolve().parents[1] / "config" / "topology.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        pki = devpki.init(Path(tmp) / "pki", topo)
        key = SigningKey.load(pki / "agencies/000.00.00.G22/key.pem", pki / "agencies/000.00.00.G22/cert.pem")
        store = TrustStore.load(pki)
        anchor = str(pki / "root-ca.pem")
        public = key.cert.public_key()
        print(f"{'size':>7} {'lienthong/s':>12} {'floor/s':>10} {'signxml/s':>10} "
              f"{'vs floor':>9} {'vs signxml':>11}  same verdict")
        for label, size in SIZES.items():
            data = sign(document(size), key)
            raw_sig = key.key.sign(b"x" * 300, padding.PKCS1v15(), hashes.SHA256())

            def ours(data: bytes = data) -> object:
                return check(data, trust=store, topology=topo)

            def floor(data: bytes = data, raw_sig: bytes = raw_sig) -> object:
                tree = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, huge_tree=True))
                hashlib.sha256(etree.tostring(tree, method="c14n", exclusive=True)).digest()
                public.verify(raw_sig, b"x" * 300, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
                return tree

            def theirs(data: bytes = data) -> object:
                return signxml.XMLVerifier().verify(data, ca_pem_file=anchor)

            seconds = args.seconds if size < 1_000_000 else max(args.seconds, 3.0)
            r_ours, r_floor, r_theirs = rate(ours, seconds), rate(floor, seconds), rate(theirs, seconds)
            same = check(data, trust=store, topology=topo).signature is not None and theirs() is not None
            print(f"{label:>7} {r_ours:12.0f} {r_floor:10.0f} {r_theirs:10.0f} "
                  f"{r_ours / r_floor:8.2f}x {r_ours / r_theirs:10.2f}x  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
