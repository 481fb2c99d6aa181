"""docker-compose.yml, read as a file (no Docker engine runs here): the broker it starts is secured
as the one scripts/ensure-rabbitmq.sh makes, and the admin account is confined as the README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _broker_conf() -> dict[str, str]:
    """The rabbitmq.conf lines the tls service writes for the broker (compose's ``$$`` is a ``$``)."""
    command = COMPOSE["services"]["tls"]["command"]
    text = command[-1] if isinstance(command, list) else command
    body = text[text.index("10-lienthong.conf <<EOF"):]
    body = body[body.index("\n") + 1:body.index("\nEOF")]
    return dict(line.strip().replace("$$", "$").split(" = ", 1) for line in body.splitlines() if " = " in line)


def test_the_broker_speaks_tls_only_and_its_admin_is_confined() -> None:
    """No plain listener; the admin and guest accounts log in from loopback only; a new account gets
    no rights anywhere until set-up gives it some (``^$``); the management API listens on the
    broker's loopback only and no port of it is published."""
    conf = _broker_conf()
    assert conf["listeners.tcp"] == "none" and conf["listeners.ssl.default"] == "5671"
    assert conf["loopback_users.lienthong-admin"] == "true" and conf["loopback_users.guest"] == "true"
    assert {conf[f"default_permissions.{p}"] for p in ("configure", "read", "write")} == {"^$"}
    assert conf["management.tcp.ip"] == "127.0.0.1"
    assert COMPOSE["services"]["rabbitmq"]["ports"] == ["5671:5671"]


def test_the_admin_secret_is_generated_and_only_setup_and_status_use_it() -> None:
    """The admin's password is made on first start and kept in a file (never written in the compose
    file); set-up runs in the broker's network namespace (loopback) and no hub is given the admin."""
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert re.search(r"default_pass = %s", text) and not re.search(r"default_pass = [A-Za-z0-9]", text)
    assert COMPOSE["services"]["setup"]["network_mode"] == "service:rabbitmq"
    for name, service in COMPOSE["services"].items():
        if name.startswith("hub-"):
            assert "LIENTHONG_MGMT_URL" not in str(service.get("environment", {})), name
            assert "broker-admin" not in str(service.get("command", "")), name
