"""Where a deployment keeps things and how it is tuned: one frozen object, read from the
environment once, by the entry point (``Settings.from_env``), and passed in.  No module reads the
environment at import.

| variable | default | what |
|---|---|---|
| ``LIENTHONG_DATA`` | ``./data``, else the checkout's ``data/`` | data directory: dev PKI, SQLite state |
| ``LIENTHONG_TOPOLOGY`` | searched, see below | hubs and agency directory |
| ``LIENTHONG_LANG`` | ``vi`` | language of what the CLI prints (``vi`` or ``en``; ``--lang`` wins) |
| ``LIENTHONG_PKI`` | ``$LIENTHONG_DATA/pki`` | trust store directory, hub and agency keys |
| ``LIENTHONG_TRANSPORT_CA`` | ``$LIENTHONG_PKI/transport`` | the broker TLS CA: ``ca.pem`` (``ca.key`` where issued) |
| ``LIENTHONG_STATE_URL`` | ``$LIENTHONG_DATA/state`` | SQLite directory, or a ``postgresql://`` URL |
| ``LIENTHONG_MGMT_URL`` | ``http://127.0.0.1:15672`` | RabbitMQ management API and its admin account (setup, status) |
| ``LIENTHONG_CHECKPOINT_SECONDS`` | 60 | how often a hub signs the head of its audit log |
| ``LIENTHONG_WATCH_SECONDS`` | 30 | how often a hub reads its queue depths for alerts |
| ``LIENTHONG_LEASE_SECONDS`` | 15 | how long a worker's claim on a message keeps other workers off |
| ``LIENTHONG_SQLITE_TIMEOUT`` | 10 | seconds a SQLite store waits for a lock |
| ``LIENTHONG_CRL_FETCH_SECONDS`` | 3600 | how often hubs and recipients fetch the CAs' CRLs (0: never) |
| ``LIENTHONG_RECEIPT_HOLD_SECONDS`` | 0.25 | how long receipts for other hubs' agencies wait to leave together |
| ``LIENTHONG_ENTRY_BATCH_SECONDS`` | 0.02 | under load, how long an agency's document may wait for others (batches) |
| ``LIENTHONG_RECORD_BATCHES`` | on | ``off``: each hop record signed alone (wire version 1), for older SDKs |
| ``LIENTHONG_RECEIPTS`` | on | ``off`` only to measure what receipts cost (bench/) |
| ``LIENTHONG_RECEIPT_BUNDLES`` | on | ``off`` only to measure what bundles save: each receipt travels alone (bench/) |
| ``LIENTHONG_FAULT`` | | ``<point>:<n>``: die (exit 137) the n-th time ``<point>`` is reached (reliability tests) |
| ``LIENTHONG_PKCS11_MODULES`` | Debian's token modules | allowed PKCS#11 libraries: ``:``-separated path patterns |

The topology is found the same way by every command, wherever it is run from: a command's
``--topology`` flag, else ``LIENTHONG_TOPOLOGY`` (either, once given, is the only place looked),
else ``topology.yaml`` in the data directory, else the repository's ``config/topology.yaml`` (the
development default, when lienthong runs from a checkout).  ``Settings.topology_searched`` says
where it looked, for the error that names them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PkiLayout:
    """Where the trust store directory keeps each principal's material.

    Each principal's secrets sit in its own directory, so a host gets only its own: a hub's
    directory holds its signing key and the client certificates of its two broker accounts (its
    own vhost, its links to neighbours); an agency's, its signing key and its broker account.
    The CAs' keys live under ``ca/`` and ``transport/ca.key``, on the host that issues."""

    root: Path
    transport: Path | None = None
    """The transport CA's directory (default ``<root>/transport``)."""

    @property
    def anchor(self) -> Path:
        return self.root / "root-ca.pem"

    @property
    def transport_ca(self) -> Path:
        return self.transport or self.root / "transport"

    @property
    def broker_ca(self) -> Path:
        """The CA certificate a client verifies the broker's TLS certificate against."""
        return self.transport_ca / "ca.pem"

    def hub(self, hub_id: str) -> tuple[Path, Path]:
        """(private key, certificate) of a hub."""
        d = self.root / "hubs" / hub_id
        return d / "key.pem", d / "cert.pem"

    def agency(self, organ_id: str) -> tuple[Path, Path]:
        """(private key, certificate) of an agency."""
        d = self.root / "agencies" / organ_id
        return d / "key.pem", d / "cert.pem"

    @staticmethod
    def token_file(key_path: Path) -> Path:
        """Beside a principal's ``key.pem``: ``key.pkcs11``, a file holding the PKCS#11 URI of its
        key when the key stays on a token (used when ``key.pem`` is absent)."""
        return key_path.with_name("key.pkcs11")

    def hub_account(self, hub_id: str, role: str) -> tuple[Path, Path]:
        """(private key, client certificate) of a hub's broker account: ``role`` "hub" (its own
        vhost) or "link" (publishing into its neighbours')."""
        d = self.root / "hubs" / hub_id
        return d / f"amqp-{role}-key.pem", d / f"amqp-{role}-cert.pem"

    @property
    def directory_authorities(self) -> Path:
        """Whom this host takes its directory from: the SHA-256 fingerprints of the directory
        authorities' certificates, one per line (``#`` starts a comment).  Local to each host: a
        hub's operator decides it, no directory can change it."""
        return self.root / "directory-authorities.txt"

    def directory_authority(self) -> tuple[Path, Path]:
        """(private key, certificate) of the directory authority, on the host that signs directories."""
        d = self.root / "directory"
        return d / "key.pem", d / "cert.pem"

    def authorities(self) -> tuple[str, ...]:
        """The fingerprints :attr:`directory_authorities` names (none if the file is absent)."""
        try:
            text = self.directory_authorities.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ()
        return tuple(line.split("#", 1)[0].strip().lower().replace(":", "") for line in text.splitlines()
                     if line.split("#", 1)[0].strip())

    def agency_account(self, organ_id: str) -> tuple[Path, Path]:
        """(private key, client certificate) of an agency's broker account."""
        d = self.root / "agencies" / organ_id
        return d / "amqp-key.pem", d / "amqp-cert.pem"


@dataclass
class Fault:
    """Fault injection for the reliability tests: ``<point>:<n>`` kills the process (exit 137, as
    SIGKILL would) the n-th time it reaches ``<point>`` (``after-publish``, ``before-ack`` in a
    hub worker; ``folder-after-send`` in the folder drop).  Empty: never."""

    point: str = ""
    countdown: int = 0

    @classmethod
    def parse(cls, spec: str) -> Fault:
        if not spec:
            return cls()
        point, _, n = spec.partition(":")
        return cls(point, int(n or "1"))

    def maybe_die(self, point: str) -> None:
        if self.point and self.point == point:
            self.countdown -= 1
            if self.countdown <= 0:
                os._exit(137)


@dataclass(frozen=True)
class Tuning:
    """Periods, timeouts and test switches (see the table above)."""

    checkpoint_seconds: float = 60.0
    watch_seconds: float = 30.0
    lease_seconds: float = 15.0
    sqlite_timeout: float = 10.0
    receipts: bool = True
    receipt_bundles: bool = True
    fault: str = ""
    crl_fetch_seconds: float = 3600.0
    receipt_hold_seconds: float = 0.25
    entry_batch_seconds: float = 0.02
    record_batches: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tuning:
        return cls(checkpoint_seconds=float(env.get("LIENTHONG_CHECKPOINT_SECONDS", "60")),
                   watch_seconds=float(env.get("LIENTHONG_WATCH_SECONDS", "30")),
                   lease_seconds=float(env.get("LIENTHONG_LEASE_SECONDS", "15")),
                   sqlite_timeout=float(env.get("LIENTHONG_SQLITE_TIMEOUT", "10")),
                   receipts=env.get("LIENTHONG_RECEIPTS", "on") != "off",
                   receipt_bundles=env.get("LIENTHONG_RECEIPT_BUNDLES", "on") != "off",
                   fault=env.get("LIENTHONG_FAULT", ""),
                   crl_fetch_seconds=float(env.get("LIENTHONG_CRL_FETCH_SECONDS", "3600")),
                   receipt_hold_seconds=float(env.get("LIENTHONG_RECEIPT_HOLD_SECONDS", "0.25")),
                   entry_batch_seconds=float(env.get("LIENTHONG_ENTRY_BATCH_SECONDS", "0.02")),
                   record_batches=env.get("LIENTHONG_RECORD_BATCHES", "on") != "off")


REPOSITORY = Path(__file__).resolve().parents[1]
"""The checkout lienthong runs from, when it does (its ``config/`` is the development default)."""


def _data_dir(env: Mapping[str, str], given: str | None) -> Path:
    if given or env.get("LIENTHONG_DATA"):
        return Path(given or env["LIENTHONG_DATA"])
    here = Path("data")
    if not here.is_dir() and (REPOSITORY / "pyproject.toml").is_file() and (REPOSITORY / "data").is_dir():
        return REPOSITORY / "data"
    return here


def find_topology(flag: str | None, env: Mapping[str, str], data_dir: Path,
                  repository: Path = REPOSITORY) -> tuple[Path, tuple[str, ...]]:
    """The topology file and the places looked, in the order of the module's docstring.  When none
    exists, the first place stands (loading it fails, naming the places)."""
    if flag:
        return Path(flag), (f"--topology {flag}",)
    if env.get("LIENTHONG_TOPOLOGY"):
        return Path(env["LIENTHONG_TOPOLOGY"]), (f"LIENTHONG_TOPOLOGY={env['LIENTHONG_TOPOLOGY']}",)
    places = [data_dir / "topology.yaml", repository / "config" / "topology.yaml"]
    found = next((p for p in places if p.is_file()), places[0])
    return found, tuple(str(p) for p in places)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    topology: Path
    pki: Path
    state_url: str
    mgmt_url: str
    tuning: Tuning = field(default_factory=Tuning)
    transport_ca: Path | None = None
    topology_searched: tuple[str, ...] = ()
    """Where the topology was looked for (``find_topology``)."""
    pkcs11_modules: tuple[str, ...] = ()
    """Path patterns of the PKCS#11 libraries a key URI may load (empty: ``broker.pkcs11.DEFAULT_MODULES``)."""

    @property
    def keys(self) -> PkiLayout:
        return PkiLayout(self.pki, self.transport_ca)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: str | None) -> Settings:
        env = os.environ if env is None else env
        data = _data_dir(env, overrides.get("data_dir"))
        topology, searched = find_topology(overrides.get("topology"), env, data)
        return cls(
            data_dir=data,
            topology=topology,
            topology_searched=searched,
            pki=Path(overrides.get("pki") or env.get("LIENTHONG_PKI", str(data / "pki"))),
            state_url=overrides.get("state_url") or env.get("LIENTHONG_STATE_URL", str(data / "state")),
            mgmt_url=overrides.get("mgmt_url") or env.get("LIENTHONG_MGMT_URL", "http://127.0.0.1:15672"),
            tuning=Tuning.from_env(env),
            transport_ca=Path(t) if (t := overrides.get("transport_ca") or env.get("LIENTHONG_TRANSPORT_CA")) else None,
            pkcs11_modules=tuple(p for p in env.get("LIENTHONG_PKCS11_MODULES", "").split(":") if p),
        )
