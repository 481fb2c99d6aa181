"""The ``settings:`` block of the topology: what the hubs of one deployment share, typed, frozen and
checked when the topology is read, so that a misspelt key or a word where a number belongs stops
the load with a sentence naming it, instead of a default used in silence.

Each section is a frozen dataclass whose fields document themselves; :func:`read` builds them from
YAML's plain values.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.core.errors import ConfigError
from broker.core.parsing import DEFAULT_LIMITS, ParseLimits
from broker.i18n import N_


@dataclass(frozen=True)
class Alerts:
    """When a hub's queues need a person (``settings.alerts``): hubs raise an ``alert``, ``lienthong
    status`` warns.  The rules are here, once, for both."""

    backlog: int = 1000
    """Messages waiting in a hub's ingress."""
    parked: int = 0
    """Parked messages a hub may hold before it alerts (0: alert on the first)."""
    inbox_backlog: int = 500
    """Messages waiting in one agency's inbox (its document system is not taking them)."""
    inbox_age_seconds: float = 86400.0
    """Age of the oldest message in an agency's inbox."""
    certificate_days: int = 30
    """Days before a certificate (a hub's, an agency's) expires from which it is flagged."""
    broker_share: float = 0.8
    """Share of a hub's broker's file descriptors, sockets or Erlang processes in use from which
    ``lienthong status`` warns: a broker out of file handles accepts no new connection at all."""

    def limit_of(self, queue: str) -> tuple[str, int] | None:
        """(alert kind, limit) of a queue whose depth a threshold watches; None for the others."""
        if queue == "ingress":
            return "backlog", self.backlog
        if queue == "parking":
            return "parked", self.parked
        if queue.startswith("inbox."):
            return "inbox-backlog", self.inbox_backlog
        return None

    def exceeded(self, queue: str, messages: int) -> str | None:
        """The alert kind if ``messages`` waiting in ``queue`` is over its limit, else None."""
        watched = self.limit_of(queue)
        return watched[0] if watched is not None and messages > watched[1] else None

    def broker_near_limits(self, node: Mapping[str, Any]) -> list[tuple[str, int, int]]:
        """What a broker node (as the management API's ``/api/nodes`` lists it) uses at or above
        ``broker_share`` of its limit: (``fd``, ``sockets`` or ``proc``, used, limit)."""
        out = []
        for what in ("fd", "sockets", "proc"):
            used, total = node.get(f"{what}_used"), node.get(f"{what}_total")
            if isinstance(used, int) and isinstance(total, int) and total > 0 and used >= self.broker_share * total:
                out.append((what, used, total))
        return out

    def too_old(self, queue: str, oldest_seconds: float | None) -> str | None:
        """``inbox-age`` if the oldest message of inbox ``queue`` waited longer than allowed."""
        if queue.startswith("inbox.") and oldest_seconds is not None and oldest_seconds > self.inbox_age_seconds:
            return "inbox-age"
        return None


@dataclass(frozen=True)
class Report:
    """``lienthong report`` (``settings.report``)."""

    utc_offset: str = "+07:00"
    """The time zone periods and dates are read in."""
    ack_deadline_hours: float = 24.0
    """A received document counts as acknowledged if status 01 or 03 came within this."""
    targets: Mapping[str, float] = field(default_factory=dict)
    """Per level (``province``, ``commune``...), the share of documents to sign and send electronically."""
    unit: str = ""
    """The reporting unit named on the report's files ('' : the top hub's name; ``--unit`` wins)."""


@dataclass(frozen=True)
class Revocation:
    """How hubs learn of revoked certificates (``settings.revocation``)."""

    grace_hours: float = 0.0
    """How long past its nextUpdate an overdue CRL still counts (0: refuse at once)."""
    max_crl_age_days: float = 7.0
    """How long after it was issued a CRL without nextUpdate counts (never forever)."""
    crl_urls: tuple[str, ...] = ()
    """CRLs to fetch besides the distribution points the CA certificates name."""
    ocsp_url: str = ""
    """The OCSP responder to ask when no current CRL speaks ('' : each certificate's AIA)."""
    ocsp_max_age_seconds: float = 300.0
    """How long after its thisUpdate an OCSP answer without nextUpdate counts (short: such a
    responder always has newer news)."""


@dataclass(frozen=True)
class Audit:
    """``settings.audit``."""

    tsa_url: str = ""
    """An RFC 3161 time-stamping authority that stamps every audit checkpoint ('' : none)."""
    witness_within_seconds: float = 900.0
    """``audit verify-log`` fails a checkpoint older than this that no neighbour witnessed."""


@dataclass(frozen=True)
class Vxp:
    """The national axis protocol served by the gateway (``settings.vxp``)."""

    window_seconds: float = 900.0
    """How far a request's timestamp may be off, either way."""
    utc_offset: str = ""
    """The zone of the protocol's dates ('' : the report's)."""


@dataclass(frozen=True)
class DeploymentSettings:
    """Everything of ``settings:``."""

    max_bytes: int = DEFAULT_LIMITS.max_bytes
    """Largest message a hub accepts (attachments are base64)."""
    max_depth: int = DEFAULT_LIMITS.max_depth
    """Deepest element nesting accepted."""
    retry_tiers_ms: tuple[int, ...] = ()
    """The retry tiers' TTLs, in order ('' : 1 s, 10 s, 60 s)."""
    alerts: Alerts = field(default_factory=Alerts)
    report: Report = field(default_factory=Report)
    revocation: Revocation = field(default_factory=Revocation)
    audit: Audit = field(default_factory=Audit)
    vxp: Vxp = field(default_factory=Vxp)

    @property
    def limits(self) -> ParseLimits:
        return ParseLimits(max_bytes=self.max_bytes, max_depth=self.max_depth)


SHARED = ("max_bytes", "max_depth", "report")
"""What every hub of a network must agree on, carried by the signed directory: the size limits (a
hub must take what another forwards) and the reporting targets.  The rest is each hub's own (its
alert thresholds, retry tiers, revocation sources, time-stamping authority, the axis protocol's
window), read from its own topology file and never from a directory."""


def shared_part(raw: Any) -> dict[str, Any]:
    """The shared keys of a ``settings:`` mapping, for a directory."""
    return {k: v for k, v in dict(raw or {}).items() if k in SHARED}


def with_local(shared: DeploymentSettings, local: DeploymentSettings) -> DeploymentSettings:
    """The settings a hub runs on: ``shared`` (a directory's) for what hubs agree on, ``local`` (its
    own topology file's) for the rest."""
    return dataclasses.replace(local, **{k: getattr(shared, k) for k in SHARED})


_OFFSET = re.compile(r"[+-]\d{2}:?\d{2}")


def read(raw: Any, source: str = "topology") -> DeploymentSettings:
    """The settings of a topology's ``settings:`` mapping (absent: every default)."""
    out: DeploymentSettings = _section(DeploymentSettings, raw if raw is not None else {}, f"{source}: settings")
    for where, offset in (("report.utc_offset", out.report.utc_offset), ("vxp.utc_offset", out.vxp.utc_offset)):
        if offset and not _OFFSET.fullmatch(offset):
            raise ConfigError(N_("{source}: settings.{where} must be an offset such as +07:00, not {offset!r}"),
                              source=source, where=where, offset=offset)
    if not 0 < out.alerts.broker_share <= 1:
        raise ConfigError(N_("{source}: settings.alerts.broker_share is a share above 0, at most 1"), source=source)
    if any(not 0 <= v <= 1 for v in out.report.targets.values()):
        raise ConfigError(N_("{source}: settings.report.targets are shares between 0 and 1"), source=source)
    if out.revocation.ocsp_max_age_seconds <= 0:
        raise ConfigError(N_("{source}: settings.revocation.ocsp_max_age_seconds must be positive"), source=source)
    if any(ms <= 0 for ms in out.retry_tiers_ms) or out.max_bytes <= 0 or out.max_depth <= 0:
        raise ConfigError(N_("{source}: settings.max_bytes, max_depth and retry_tiers_ms must be positive"),
                          source=source)
    return out


def _section(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(N_("{where} must be a mapping, not {value!r}"), where=where, value=raw)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise ConfigError(N_("{where}: unknown key(s) {unknown} (known: {known})"), where=where,
                          unknown=', '.join(unknown), known=', '.join(fields))
    hints = typing.get_type_hints(cls)
    return cls(**{name: _value(hints[name], raw[name], f"{where}.{name}") for name in raw})


def _value(kind: Any, value: Any, where: str) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _section(kind, value, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(N_("{where} must be a list, not {value!r}"), where=where, value=value)
        return tuple(_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(N_("{where} must be a mapping, not {value!r}"), where=where, value=value)
        return {str(k): _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if kind is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(N_("{where} must be text, not {value!r}"), where=where, value=value)
        return str(value)
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise ConfigError(N_("{where} must be a whole number, not {value!r}") if kind is int else
                              N_("{where} must be a number, not {value!r}"), where=where, value=value)
        return kind(value)
    raise AssertionError(f"{where}: no reader for {kind!r}")  # a field type this module does not know
