"""Gateway documents/s for 10 KB documents beside the SDK's, in the same run: the REST route and
the national axis protocol's sendEdoc.

    python bench/gateway_throughput.py [--count 1000] [--clients 4]

Each pushes signed 10 KB documents into a hub's ingress (no hub workers run, so only the way in
is measured): the SDK over one kept-open AMQP connection with publisher confirms; the gateway
over HTTPS keep-alive from ``--clients`` concurrent clients, each request parsed, authenticated
and published with a confirm: ``POST /v1/documents`` with a bearer token, and ``/vxp/sendEdoc``
with HMAC-signed headers (each request from a new client object, its own timestamp), the
replay check and hash-file.  Needs RabbitMQ with management.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from adapters.gateway import create_app, issue_token  # noqa: E402
from adapters.https import server_options  # noqa: E402
from adapters.vxp import secret_book  # noqa: E402
from broker import logs  # noqa: E402
from broker.relay import devpki  # noqa: E402
from tests import services  # noqa: E402
from tests.relay import Relay, serve  # noqa: E402
from tests.vxp_client import VxpClient, sdk_hash  # noqa: E402

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
            docs = [relay.document(SENDER, [RECIPIENT], size=5500, subject=f"g{i}") for i in range(3 * args.count)]
            sdk_docs, rest_docs, vxp_docs = docs[:args.count], docs[args.count:2 * args.count], docs[2 * args.count:]

            client = relay.client(SENDER)
            start = time.perf_counter()
            for d in sdk_docs:
                client.send(d)
            sdk_rate = len(sdk_docs) / (time.perf_counter() - start)
            client.close()

            tls = Path(tmp) / "tls"
            ca = devpki.make_root("gateway CA")
            tls.mkdir()
            (tls / "ca.pem").write_bytes(devpki.pem_cert(ca.cert))
            devpki.write_pair((tls / "key.pem", tls / "cert.pem"), devpki.issue_server(ca, ["127.0.0.1"]))
            context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
            mutual = ssl.create_default_context(cafile=str(tls / "ca.pem"))  # /vxp: the agency's certificate
            agency_key, agency_cert = relay.settings.keys.agency(SENDER)
            mutual.load_cert_chain(str(agency_cert), str(agency_key))
            port, server = serve(create_app(relay.settings, connect=relay.client, client_ca=relay.settings.pki),
                                 **server_options(tls / "cert.pem", tls / "key.pem", relay.settings.pki))
            token = issue_token(relay.settings, SENDER)
            secret = secret_book(relay.settings).ensure(SENDER)
            errors: list[str] = []

            def rest(conn: http.client.HTTPSConnection, doc: bytes) -> None:
                conn.request("POST", "/v1/documents", body=doc, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/xml"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 202:
                    errors.append(str(resp.status))

            def vxp(conn: http.client.HTTPSConnection, doc: bytes) -> None:
                c = VxpClient(f"https://127.0.0.1:{port}/vxp", SENDER, secret)
                url, headers, body = c.prepare("sendEdoc", doc + b"\r\n", **{
                    "from": SENDER, "hash-file": sdk_hash(doc),
                    "messagetype": "edoc"})
                conn.request("POST", "/vxp/sendEdoc", body=body, headers=headers)
                resp = conn.getresponse()
                answer = resp.read()
                if b'"ErrorCode": "0"' not in answer:
                    errors.append(answer.decode()[:80])

            def push(call: object, part: list[bytes]) -> None:
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60,
                                                   context=mutual if call is vxp else context)
                for d in part:
                    call(conn, d)  # type: ignore[operator]
                conn.close()

            def rate(call: object, batch: list[bytes]) -> float:
                parts = [batch[i::args.clients] for i in range(args.clients)]
                threads = [threading.Thread(target=push, args=(call, p)) for p in parts]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return len(batch) / (time.perf_counter() - start)

            rest_rate, vxp_rate = rate(rest, rest_docs), rate(vxp, vxp_docs)
            server.should_exit = True
            size = len(docs[0])
            print(f"{'way in':>14} {'docs/s':>8}   ({args.count} documents of {size / 1000:.1f} kB each)")
            print(f"{'SDK (AMQP)':>14} {sdk_rate:8.0f}")
            print(f"{'REST':>14} {rest_rate:8.0f}   ({args.clients} HTTPS clients)")
            print(f"{'VXP sendEdoc':>14} {vxp_rate:8.0f}   ({args.clients} HTTPS clients; "
                  f"{vxp_rate / rest_rate:.0%} of REST)")
            print(f"errors: {len(errors)} {errors[:3]}")
        finally:
            relay.close()


if __name__ == "__main__":
    main()
