"""Where a deployment keeps things, from the environment with one-machine defaults.

| variable | default | what |
|---|---|---|
| ``LIENTHONG_DATA`` | ``./data`` | data directory: dev PKI, credentials, SQLite state |
| ``LIENTHONG_TOPOLOGY`` | ``config/topology.yaml`` | hubs and agency directory |
| ``LIENTHONG_PKI`` | ``$LIENTHONG_DATA/pki`` | trust store directory, hub and agency keys |
| ``LIENTHONG_STATE_URL`` | ``$LIENTHONG_DATA/state`` | SQLite directory, or a ``postgresql://`` URL |
| ``LIENTHONG_MGMT_URL`` | ``http://guest:guest@127.0.0.1:15672`` | RabbitMQ management API (setup, status) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    topology: Path
    pki: Path
    state_url: str
    mgmt_url: str

    @property
    def credentials(self) -> Path:
        return self.data_dir / "credentials.yaml"

    @classmethod
    def from_env(cls, **overrides: str | None) -> Settings:
        env = os.environ
        data = Path(overrides.get("data_dir") or env.get("LIENTHONG_DATA", "data"))
        return cls(
            data_dir=data,
            topology=Path(overrides.get("topology") or env.get("LIENTHONG_TOPOLOGY", "config/topology.yaml")),
            pki=Path(overrides.get("pki") or env.get("LIENTHONG_PKI", str(data / "pki"))),
            state_url=overrides.get("state_url") or env.get("LIENTHONG_STATE_URL", str(data / "state")),
            mgmt_url=overrides.get("mgmt_url") or env.get("LIENTHONG_MGMT_URL", "http://guest:guest@127.0.0.1:15672"),
        )
