"""Real services for integration tests: RabbitMQ and PostgreSQL.

With a Docker engine, testcontainers starts throw-away servers.  Without
one (this project's CI), the servers named by ``LIENTHONG_AMQP_URL`` /
``LIENTHONG_PG_URL`` are used; ``scripts/test.sh`` installs and starts them.
When a service does not answer: the test fails under CI (``CI`` set), and
is skipped on a developer machine, with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MGMT = "http://guest:guest@127.0.0.1:15672"
DEFAULT_PG = "postgresql://lienthong:lienthong@127.0.0.1:5432/lienthong"


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


@contextmanager
def rabbitmq() -> Iterator[tuple[str, str]]:
    """(AMQP URL, management URL) of a real broker."""
    if docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as c:
            host, port = c.get_container_host_ip(), c.get_exposed_port(5672)
            mport = c.get_exposed_port(15672)
            yield f"amqp://guest:guest@{host}:{port}/", f"http://guest:guest@{host}:{mport}"
        return
    url = os.environ.get("LIENTHONG_AMQP_URL", DEFAULT_AMQP)
    mgmt = os.environ.get("LIENTHONG_MGMT_URL", DEFAULT_MGMT)
    if not answers(url, 5672) or not answers(mgmt, 15672):
        unavailable(f"RabbitMQ at {urlsplit(url).hostname}:{urlsplit(url).port or 5672} (with management)")
    yield url, mgmt


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
