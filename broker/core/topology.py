"""The topology: hubs (a tree of relay nodes) and the agency directory.

Loaded from YAML (``config/topology.yaml``).  Tiers are configuration: a
hub's ``parent`` makes the tree, so a three-tier province (province,
district, commune) and a two-tier one (province, commune) sit side by side.
Each agency attaches to exactly one hub.  The directory also binds each
agency to its signing certificates (see :func:`check_signer`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from broker.core import deployment
from broker.core.deployment import DeploymentSettings
from broker.core.errors import ConfigError, SignerMismatch, UnknownAgency
from broker.core.trust import fingerprint
from broker.i18n import N_

DEFAULT_TOPOLOGY = Path("config/topology.yaml")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it (its wheels are): the nation's directory, 12,500
agencies, parses in about a fifth of the pure-Python parser's time (``bench/directory_load.py``)."""


@dataclass(frozen=True)
class Hub:
    hub_id: str
    name: str
    parent: str | None
    amqp_url: str
    """The broker's AMQP URL; for a cluster, one URL per node separated by spaces (in YAML, a list
    is accepted): clients connect to the first node that answers."""
    tier: str = ""
    management_url: str = ""
    """RabbitMQ management API of this hub's broker ('' = the deployment default)."""


@dataclass(frozen=True)
class Agency:
    organ_id: str
    name: str
    hub: str
    cert_sha256: tuple[str, ...] = ()
    """Pinned certificate fingerprints; empty means: bound by the subject's UID."""
    level: str = ""
    """The agency's tier for reports (``province``, ``department``, ``district``, ``commune``...);
    defaults to the tier of its hub."""
    legacy_sha1: bool = False
    """Accept SHA-1 from this agency (its signature, digest, or certificates of its chain: the
    older government CA generation and its USB tokens); every hub alerts on each such document.
    Only ever for this agency: another's SHA-1 stays refused."""
    mail: str = ""
    """The agency's official mail address, as the directory publishes it."""
    parent: str = ""
    """The code of the agency it reports to (a commune's district or province committee), if any."""
    old_codes: tuple[str, ...] = ()
    """Its codes before a reorganisation (the district tier went in 2025, communes merged): a
    document addressed to one of them reaches this agency, its hop record naming both codes."""

    @property
    def old_code(self) -> str:
        """Its most recent former code ('' if it never changed), as the national axis lists it."""
        return self.old_codes[0] if self.old_codes else ""


@dataclass(frozen=True)
class Topology:
    hubs: dict[str, Hub]
    agencies: dict[str, Agency]
    settings: DeploymentSettings = field(default_factory=DeploymentSettings)
    """The ``settings:`` block, typed and checked (:mod:`broker.core.deployment`)."""
    namespace: str = "lienthong"
    """Prefix of vhosts (and, when not the default, of broker user names): deployments and
    test runs sharing one broker stay apart."""
    replaced: dict[str, str] = field(default_factory=dict)
    """A former agency code -> the code of the agency that carries it now."""

    def current_code(self, code: str) -> str:
        """The code that answers for ``code`` now: itself, or the agency that replaced it."""
        return code if code in self.agencies else self.replaced.get(code, code)

    def replacements(self, codes: tuple[str, ...]) -> str:
        """``old>new,...`` for those of ``codes`` that are former codes ("" for none): a hop
        record names both."""
        if not self.replaced:
            return ""
        return ",".join(f"{c}>{self.current_code(c)}" for c in codes if self.current_code(c) != c)

    @functools.cached_property
    def _children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {h: [] for h in self.hubs}
        for h in self.hubs.values():
            if h.parent is not None and h.parent in out:
                out[h.parent].append(h.hub_id)
        return out

    @classmethod
    def load(cls, path: str | Path = DEFAULT_TOPOLOGY) -> Topology:
        """The topology in YAML, or in JSON when the file's name ends in ``.json`` (the same
        mapping; JSON reads 20 times faster than YAML does with libyaml: 0.08 s for 12,500 agencies)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            raw = json.loads(text) if p.suffix == ".json" else yaml.load(text, Loader=_LOADER)
        except OSError as exc:
            raise ConfigError(N_("cannot read topology {path}: {reason}"), path=p, reason=exc.strerror) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(N_("topology {path} is not valid JSON: {reason}"), path=p, reason=exc) from None
        except yaml.YAMLError as exc:
            raise ConfigError(N_("topology {path} is not valid YAML: {reason}"), path=p, reason=exc) from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "topology") -> Topology:
        if not isinstance(raw, dict) or "hubs" not in raw or "agencies" not in raw:
            raise ConfigError(N_("{source} must be a mapping with 'hubs' and 'agencies'"), source=source)
        default_url = _urls(raw.get("amqp_url", "amqps://127.0.0.1:5671/"))
        hubs: dict[str, Hub] = {}
        for h in raw["hubs"]:
            hid = str(h["id"])
            if hid in hubs:
                raise ConfigError(N_("{source}: hub {hub!r} is defined twice"), source=source, hub=hid)
            hubs[hid] = Hub(hid, str(h.get("name", hid)), h.get("parent"),
                            _urls(h.get("amqp_url", default_url)), str(h.get("tier", "")),
                            str(h.get("management_url", raw.get("management_url", ""))))
        agencies: dict[str, Agency] = {}
        for a in raw["agencies"]:
            oid = str(a["organ_id"])
            if oid in agencies:
                raise ConfigError(N_("{source}: agency {agency!r} is defined twice"), source=source, agency=oid)
            if a.get("hub") not in hubs:
                raise ConfigError(N_("{source}: agency {agency!r} names unknown hub {hub!r}"), source=source,
                                  agency=oid, hub=a.get('hub'))
            pins = tuple(str(x).lower().replace(":", "") for x in a.get("cert_sha256", []) or [])
            level = str(a.get("level") or hubs[str(a["hub"])].tier)
            legacy = a.get("legacy_sha1", False)
            if not isinstance(legacy, bool):
                raise ConfigError(N_("{source}: agency {agency!r}: legacy_sha1 must be true or false, not {legacy!r}"),
                                  source=source, agency=oid, legacy=legacy)
            old = [str(a["old_code"])] if a.get("old_code") else []
            old += [str(c) for c in a.get("old_codes") or [] if str(c) not in old]
            agencies[oid] = Agency(oid, str(a.get("name", oid)), str(a["hub"]), pins, level, legacy,
                                   str(a.get("mail") or ""), str(a.get("parent") or ""), tuple(old))
        replaced: dict[str, str] = {}
        for a in agencies.values():
            if a.parent and a.parent not in agencies:
                raise ConfigError(N_("{source}: agency {agency!r} names unknown parent agency {parent!r}"),
                                  source=source, agency=a.organ_id, parent=a.parent)
            for code in a.old_codes:
                if code in agencies or replaced.get(code, a.organ_id) != a.organ_id:
                    raise ConfigError(N_("{source}: old code {old!r} of {agency!r} is another agency's code"),
                                      source=source, old=code, agency=a.organ_id)
                replaced[code] = a.organ_id
        topo = cls(hubs, agencies, deployment.read(raw.get("settings"), source), str(raw.get("namespace", "lienthong")),
                   replaced)
        topo._check_tree(source)
        return topo

    def _check_tree(self, source: str) -> None:
        roots = [h for h in self.hubs.values() if h.parent is None]
        if len(roots) != 1:
            raise ConfigError(N_("{source}: exactly one hub must have no parent, found {n}"), source=source,
                              n=len(roots))
        for h in self.hubs.values():
            seen = {h.hub_id}
            cur = h
            while cur.parent is not None:
                if cur.parent not in self.hubs:
                    raise ConfigError(N_("{source}: hub {hub!r} names unknown parent {parent!r}"), source=source,
                                      hub=cur.hub_id, parent=cur.parent)
                cur = self.hubs[cur.parent]
                if cur.hub_id in seen:
                    raise ConfigError(N_("{source}: hub {hub!r} is part of a cycle"), source=source, hub=h.hub_id)
                seen.add(cur.hub_id)

    def agency(self, organ_id: str) -> Agency:
        try:
            return self.agencies[organ_id]
        except KeyError:
            raise UnknownAgency(N_("agency {agency!r} is not in the agency directory"), agency=organ_id) from None

    def neighbours(self, hub_id: str) -> list[str]:
        """The hubs ``hub_id`` exchanges messages with: its parent first, then its children."""
        parent = self.hubs[hub_id].parent
        return ([parent] if parent else []) + self._children.get(hub_id, [])

    def path_to_root(self, hub_id: str) -> list[str]:
        """``[hub_id, parent, ..., root]``."""
        out = [hub_id]
        while (parent := self.hubs[out[-1]].parent) is not None:
            out.append(parent)
        return out


def _urls(value: Any) -> str:
    """One URL, or several (a YAML list or a string separated by spaces or commas) as one string."""
    items = value if isinstance(value, list) else str(value).replace(",", " ").split()
    return " ".join(str(u).strip() for u in items if str(u).strip())


def subject_uid(cert: x509.Certificate) -> str | None:
    """The agency code carried in the certificate subject (UID attribute)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(attrs[0].value) if attrs else None


def check_signer(topology: Topology, organ_id: str, cert: x509.Certificate) -> Agency:
    """Raise unless ``cert`` is bound to agency ``organ_id`` in the directory.

    Binding: the agency is in the directory and either its entry pins the
    certificate's SHA-256 fingerprint, or (no pins) the subject's UID equals
    the agency code.
    """
    agency = topology.agency(organ_id)
    if agency.cert_sha256:
        if fingerprint(cert) not in agency.cert_sha256:
            raise SignerMismatch(N_("the signing certificate is not one pinned for agency {agency!r}"), agency=organ_id)
        return agency
    uid = subject_uid(cert)
    if uid != organ_id:
        raise SignerMismatch(N_("signed by {signer!r}, but the message says it is from {agency!r}") if uid else
                             N_("signed by 'a certificate without an agency code', but the message says it is from "
                                "{agency!r}"), signer=uid, agency=organ_id)
    return agency
