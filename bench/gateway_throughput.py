"""Gateway documents/s for 10 KB documents beside the SDK's, in the same run.

    python bench/gateway_throughput.py [--count 1000] [--clients 4]

Both push signed 10 KB documents into a hub's ingress (no hub workers run, so
only the way in is measured): the SDK over one kept-open AMQP connection with
publisher confirms; the gateway over HTTP keep-alive from ``--clients``
concurrent clients, each request parsed, checked against its token and
published with a confirm.  Needs RabbitMQ with management.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from adapters.gateway import create_app, issue_token  # noqa: E402
from broker import logs  # noqa: E402
from tests import services  # noqa: E402
from tests.relay import Relay, serve  # noqa: E402

SENDER, RECIPIENT = "000.00.51.H41", "000.00.52.H41"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    logs.configure(level="WARNING")
    amqp, mgmt = services.broker_urls()
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(Path(tmp), amqp, mgmt, workers=0)
        try:
            docs = [relay.document(SENDER, [RECIPIENT], size=5500, subject=f"g{i}") for i in range(2 * args.count)]
            sdk_docs, gw_docs = docs[:args.count], docs[args.count:]

            client = relay.client(SENDER)
            start = time.perf_counter()
            for d in sdk_docs:
                client.send(d)
            sdk_rate = len(sdk_docs) / (time.perf_counter() - start)
            client.close()

            port, server = serve(create_app(relay.settings, connect=relay.client))
            token = issue_token(relay.settings, SENDER)
            errors: list[int] = []

            def push(part: list[bytes]) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                for d in part:
                    conn.request("POST", "/v1/documents", body=d, headers={
                        "Authorization": f"Bearer {token}", "Content-Type": "application/xml"})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 202:
                        errors.append(resp.status)
                conn.close()

            parts = [gw_docs[i::args.clients] for i in range(args.clients)]
            threads = [threading.Thread(target=push, args=(p,)) for p in parts]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            gw_rate = len(gw_docs) / (time.perf_counter() - start)
            server.should_exit = True
            size = len(docs[0])
            print(f"{'way in':>8} {'docs/s':>8}   ({args.count} documents of {size / 1000:.1f} kB each)")
            print(f"{'SDK':>8} {sdk_rate:8.0f}")
            print(f"{'gateway':>8} {gw_rate:8.0f}   ({args.clients} HTTP clients; errors: {len(errors)})")
        finally:
            relay.close()


if __name__ == "__main__":
    main()
