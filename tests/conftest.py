"""Shared fixtures: the sample topology, a dev PKI, and real RabbitMQ / PostgreSQL (tests/services.py)."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.core.topology import Topology
from broker.relay import devpki
from tests import services
from tests.relay import Relay

ROOT = Path(__file__).resolve().parents[1]

# What lienthong prints is Vietnamese unless asked otherwise.  The suite's assertions on sentences
# are written against the English ones, so the commands it runs speak English; the tests of the
# Vietnamese output (test_i18n, test_report, test_dashboard...) ask for Vietnamese themselves.
os.environ["LIENTHONG_LANG"] = "en"


@pytest.fixture(scope="session")
def topology() -> Topology:
    """The sample topology of config/topology.yaml."""
    return Topology.load(ROOT / "config" / "topology.yaml")


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory, topology: Topology) -> Path:
    """A dev PKI for the sample topology (root CA, hubs, agencies, empty CRL), made once per session."""
    return devpki.init(tmp_path_factory.mktemp("pki") / "pki", topology)


@pytest.fixture(scope="session")
def rabbitmq_urls() -> Iterator[tuple[str, str]]:
    """(AMQP URL, management URL) of a real RabbitMQ."""
    with services.rabbitmq() as urls:
        yield urls


@pytest.fixture(scope="session")
def second_broker() -> Iterator[services.Broker]:
    """A second RabbitMQ node, independent of the default one (no cluster, its own ports and admin
    account; the same transport CA and CRL): another operator's broker.  ``stop()`` and ``start()``
    take it away for a while and bring it back with what it held."""
    with services.independent_broker() as broker:
        yield broker


@pytest.fixture(scope="module")
def relay(rabbitmq_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[Relay]:
    """A whole relay (every hub's worker, on the real broker, in a namespace of its own), one per
    test module.  A module shapes it with ``RELAY``: keyword arguments of :class:`tests.relay.Relay`
    (``settings`` of the topology, ``env`` of the workers, ``workers``, ``before_start``...), and
    ``on_second_broker``: hubs that run on the ``second_broker``, another operator's."""
    options = dict(getattr(request.module, "RELAY", {}))
    elsewhere = options.pop("on_second_broker", ())
    if elsewhere:
        second: services.Broker = request.getfixturevalue("second_broker")
        options["brokers"] = {hub: second for hub in elsewhere}
    r = Relay(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]), *rabbitmq_urls, **options)
    yield r
    r.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a real PostgreSQL server's maintenance database (used to create test databases)."""
    with services.postgres() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A PostgreSQL database created empty for this test run and dropped after it: nothing left by
    an earlier run is relied upon."""
    with services.fresh_database(postgres_server) as url:
        yield url


@pytest.fixture()
def new_postgres_url(postgres_server: str) -> Iterator[str]:
    """A PostgreSQL database created empty for one test, as a new deployment's would be."""
    with services.fresh_database(postgres_server) as url:
        yield url


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) on loopback, the way a CA publishes its CRL."""

    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def ca_site() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A web server on loopback serving what a test puts in its ``files`` (a CA's CRL, say): its
    base URL and that mapping."""
    files: dict[str, bytes] = {}
    handler = type("Site", (_Files,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
