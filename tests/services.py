"""Real services for integration tests: RabbitMQ and PostgreSQL.

With a Docker engine, testcontainers starts throw-away servers.  Without
one (this project's CI), the servers named by ``LIENTHONG_AMQP_URL`` /
``LIENTHONG_PG_URL`` are used; ``scripts/test.sh`` installs and starts them.
When a service does not answer: the test fails under CI (``CI`` set), and
is skipped on a developer machine, with the reason.

:func:`independent_broker` (the ``second_broker`` fixture) is another RabbitMQ node on this
machine, in no cluster, with its own admin account: another operator's broker, started by
``scripts/rabbitmq-node.sh``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

DEFAULT_AMQP = "amqps://127.0.0.1:5671/"
DEFAULT_TRANSPORT_CA = "/var/lib/lienthong/transport-ca"
DEFAULT_PG = "postgresql://lienthong:lienthong@127.0.0.1:5432/lienthong"
ROOT = Path(__file__).resolve().parents[1]


def answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    if os.environ.get("LIENTHONG_NO_DOCKER"):
        return False
    try:
        import docker  # testcontainers' dependency

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no engine here
        return False


def unavailable(what: str) -> None:
    msg = f"{what} does not answer; run the tests with scripts/test.sh, which starts it"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def transport_ca() -> Path:
    """The broker TLS CA's directory (``ca.pem``, ``ca.key``): test relays issue their accounts'
    client certificates from it, and verify the broker against it."""
    return Path(os.environ.get("LIENTHONG_TRANSPORT_CA", DEFAULT_TRANSPORT_CA))


def broker_node_pids() -> list[int]:
    """The local RabbitMQ server nodes (an Erlang VM booting ``rabbit``), not the VMs of
    ``rabbitmqctl`` or ``rabbitmq-diagnostics`` that come and go (the benchmarks measure these)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"\0-s\0rabbit\0boot\0" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def broker_urls() -> tuple[str, str]:
    """(AMQP URL, management URL) of this machine's broker as scripts/ensure-rabbitmq.sh leaves it:
    from the environment, else the admin account it wrote (for bench/ scripts run by hand)."""
    mgmt = os.environ.get("LIENTHONG_MGMT_URL", "")
    admin = Path(os.environ.get("LIENTHONG_ADMIN_FILE", "/var/lib/lienthong/broker-admin.env"))
    if not mgmt and admin.exists():
        mgmt = admin.read_text().strip().partition("=")[2]
    return os.environ.get("LIENTHONG_AMQP_URL", DEFAULT_AMQP), mgmt


@contextmanager
def rabbitmq() -> Iterator[tuple[str, str]]:
    """(AMQP URL, management URL with the admin account) of a real broker with TLS."""
    if docker_available():
        with _rabbitmq_container() as urls:
            yield urls
        return
    url, mgmt = broker_urls()
    if not mgmt or not answers(url, 5671) or not answers(mgmt, 15672) or not (transport_ca() / "ca.key").exists():
        unavailable(f"RabbitMQ with TLS at {urlsplit(url).hostname}:{urlsplit(url).port or 5671} (with management, "
                    f"an admin account in LIENTHONG_MGMT_URL and the transport CA in {transport_ca()})")
    yield url, mgmt


@contextmanager
def _rabbitmq_container() -> Iterator[tuple[str, str]]:
    """A throw-away broker configured as scripts/ensure-rabbitmq.sh configures this machine's: TLS
    with a transport CA made for it, EXTERNAL logins, a generated admin account."""
    import secrets
    import tempfile

    from testcontainers.rabbitmq import RabbitMqContainer

    from broker.relay import brokercrl, devpki

    tls = Path(tempfile.mkdtemp(prefix="lienthong-tls-"))
    devpki.write_pair((tls / "server.key", tls / "server.pem"),
                      devpki.issue_server(devpki.transport_ca(tls), ["localhost", "127.0.0.1"]))
    brokercrl.renew(tls)
    for f in ("server.key", "ca.key"):
        (tls / f).chmod(0o644)  # the container's rabbitmq user reads them; the directory is private
    (tls / "lienthong.conf").write_text("\n".join([
        "listeners.tcp = none", "listeners.ssl.default = 5671",
        "auth_mechanisms.1 = PLAIN", "auth_mechanisms.2 = EXTERNAL", "ssl_cert_login_from = common_name", ""]))
    (tls / "advanced.config").write_text(  # ssl_options whole, the CRL check included
        '[{rabbit, [{ssl_options, [{cacertfile, "/tls/ca.pem"}, {certfile, "/tls/server.pem"}, '
        '{keyfile, "/tls/server.key"}, {verify, verify_peer}, {fail_if_no_peer_cert, false}, {crl_check, peer}, '
        '{crl_cache, {ssl_crl_hash_dir, {internal, [{dir, "/tls/crl"}]}}}]}]}].\n')
    (tls / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_auth_mechanism_ssl].\n")
    password = secrets.token_urlsafe(18)
    container = (RabbitMqContainer("rabbitmq:3.13-management", username="lienthong-admin", password=password)
                 .with_exposed_ports(5671, 15672).with_volume_mapping(str(tls), "/tls")
                 .with_env("RABBITMQ_ENABLED_PLUGINS_FILE", "/tls/enabled_plugins")
                 .with_env("RABBITMQ_CONFIG_FILES", "/tls/lienthong.conf")
                 .with_env("RABBITMQ_ADVANCED_CONFIG_FILE", "/tls/advanced.config"))
    with container as c:
        os.environ["LIENTHONG_TRANSPORT_CA"] = str(tls)
        host = c.get_container_host_ip()
        yield (f"amqps://{host}:{c.get_exposed_port(5671)}/",
               f"http://lienthong-admin:{password}@{host}:{c.get_exposed_port(15672)}")


SECOND_NODE = "lt-second"
"""The name of the second, independent node the tests start (``scripts/rabbitmq-node.sh``)."""


@dataclass(frozen=True)
class Broker:
    """A RabbitMQ node of its own (another operator's broker): its URLs, and stopping and starting it."""

    name: str
    amqp_url: str
    """``amqps://127.0.0.1:PORT/`` (TLS only, client certificates from the transport CA)."""
    mgmt_url: str
    """Its management API with its own admin account (``http://NAME-admin:PASSWORD@127.0.0.1:PORT``)."""

    def stop(self) -> None:
        """Shut the node down (as an outage would take it away); what it holds stays on disk."""
        _node_script("stop", self.name)

    def kill(self) -> None:
        """End its process at once, as a crash would."""
        _node_script("kill", self.name)

    def start(self) -> None:
        """Start it again, with what it held."""
        _node_script("start", self.name)


def _node_script(command: str, name: str) -> str:
    done = subprocess.run([str(ROOT / "scripts" / "rabbitmq-node.sh"), command, name], capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/rabbitmq-node.sh {command} {name}: {done.stderr.strip()}")
    return done.stdout


@contextmanager
def independent_broker(name: str = SECOND_NODE) -> Iterator[Broker]:
    """A second RabbitMQ node on this machine, in no cluster, with its own admin account, started
    by ``scripts/rabbitmq-node.sh`` (and stopped at the end if it was not running before)."""
    if os.geteuid() != 0 or not shutil.which("rabbitmq-server") or not (transport_ca() / "ca.key").exists():
        unavailable(f"a second RabbitMQ node ({name}: needs root, Debian's rabbitmq-server and the transport CA of "
                    f"scripts/ensure-rabbitmq.sh)")
    running = subprocess.run([str(ROOT / "scripts" / "rabbitmq-node.sh"), "status", name], capture_output=True,
                             timeout=60).returncode == 0
    try:
        _node_script("start", name)
        urls = dict(line.split("=", 1) for line in _node_script("urls", name).split())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        unavailable(f"a second RabbitMQ node ({name}: {exc})")
    try:
        yield Broker(name, urls["LIENTHONG_NODE_AMQP"], urls["LIENTHONG_NODE_MGMT"])
    finally:
        if not running:
            _node_script("stop", name)


@contextmanager
def postgres() -> Iterator[str]:
    """URL of a real PostgreSQL database."""
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as c:
            yield c.get_connection_url()
        return
    url = os.environ.get("LIENTHONG_PG_URL", DEFAULT_PG)
    if not answers(url, 5432):
        unavailable(f"PostgreSQL at {urlsplit(url).hostname}:{urlsplit(url).port or 5432}")
    yield url


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A PostgreSQL database created empty for the caller (as on a new machine) and dropped after.
    The role of ``url`` needs CREATEDB (``scripts/ensure-postgres.sh`` grants it)."""
    import psycopg

    name = f"lt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    try:
        yield parts._replace(path="/" + name).geturl()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
