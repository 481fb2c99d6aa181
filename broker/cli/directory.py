"""The directory every hub agrees on: sign a version, hand it to a hub, show the version in force."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from broker.cli.app import main, read_file, settings
from broker.core import directory, wire
from broker.core.directory import Directory
from broker.core.errors import UsageError
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.i18n import N_, _
from broker.relay import layout
from broker.relay.amqp import blocking
from broker.relay.assemble import hub_certificates, signing_key
from broker.relay.store import open_store
from broker.settings import Settings

CHANGE_LABELS = {"hubs_added": N_("hubs added"), "hubs_removed": N_("hubs removed"),
                 "hubs_moved": N_("hubs moved (parent or broker)"), "agencies_added": N_("agencies added"),
                 "agencies_removed": N_("agencies removed"), "agencies_moved": N_("agencies moved"),
                 "agencies_changed": N_("agencies changed (name, pins, legacy_sha1, level, parent, old codes)")}


@main.group("directory")
def directory_group() -> None:
    """The signed directory of hubs and agencies that every hub agrees on."""


@directory_group.command("sign")
@click.argument("source")
@click.option("-o", "--output", required=True, help="Where to write the signed directory.")
@click.option("--key", default=None, help="The directory authority's key (PEM file or PKCS#11 URI) "
                                          "[default: the PKI's directory/key.pem].")
@click.option("--cert", default=None, help="The directory authority's certificate [default: the PKI's "
                                           "directory/cert.pem].")
@click.option("--version", "version", type=int, default=None,
              help="The version number [default: the source's version:, else one more than OUTPUT's, else 1].")
def directory_sign(source: str, output: str, key: str | None, cert: str | None, version: int | None) -> None:
    """Sign SOURCE (a topology file: hubs, agencies, shared settings) as the next version of the
    directory, with each hub's certificate from the PKI."""
    s = settings()
    raw = _yaml(read_file(source), source)
    version = version or int(raw.pop("version", 0) or 0) or _next_version(Path(output))
    raw.pop("version", None)
    own_key, own_cert = s.keys.directory_authority()
    signer = signing_key(key or own_key, cert or own_cert, modules=s.pkcs11_modules)
    topology = Topology.from_dict(raw, source=source)
    certs = hub_certificates(s.pki, topology, TrustStore.load(s.pki))
    signed = directory.sign(directory.payload_of(raw, version=version, issued=datetime.now(UTC),
                                                 hub_certificates=certs), signer)
    Path(output).write_bytes(signed)
    click.echo(_("signed directory version {version}: {hubs} hubs, {agencies} agencies -> {output}",
                 version=version, hubs=len(topology.hubs), agencies=len(topology.agencies), output=output))


@directory_group.command("publish")
@click.argument("file")
@click.option("--hub", "hub_id", default=None, help="The hub to hand it to [default: the root of its tree]. "
                                                    "It passes it on to every other hub.")
def directory_publish(file: str, hub_id: str | None) -> None:
    """Hand the signed directory FILE to a hub, with that hub's own account, after checking it as
    the hub will (signature, authority, topology)."""
    s = settings()
    d = _checked(read_file(file), s)
    hub_id = hub_id or next(h for h, hub in d.topology.hubs.items() if hub.parent is None)
    if hub_id not in d.topology.hubs:
        raise UsageError(N_("hub {hub!r} is not in the directory"), hub=hub_id)
    url = layout.account_url(d.topology, hub_id, s.keys.hub_account(hub_id, "hub"), s.keys.broker_ca)
    blocking.publish(url, wire.EX_INGRESS, "", d.signed, message_id=d.digest,
                     user_id=wire.names(d.topology).hub_user(hub_id), headers={wire.H_KIND: wire.Kind.DIRECTORY})
    click.echo(_("directory version {version} handed to hub {hub}", version=d.version, hub=hub_id))


@directory_group.command("show")
@click.argument("file", required=False)
@click.option("--hub", "hub_id", default=None, help="The version in force at this hub (its state store).")
@click.option("--json", "as_json", is_flag=True, help="As JSON, for programs.")
def directory_show(file: str | None, hub_id: str | None, as_json: bool) -> None:
    """Show a signed directory FILE, or the version in force at a hub, and what it changes from the
    version before it."""
    s = settings()
    previous: Directory | None = None
    before: Topology | None = None
    if file is not None:
        d = _checked(read_file(file), s)
    elif hub_id is not None:
        store = open_store(s.state_url, hub=hub_id, tuning=s.tuning)
        try:
            versions = store.directory_versions(hub_id)
            if not versions:
                raise UsageError(N_("hub {hub} has no directory in force (it runs on its configured topology)"),
                                 hub=hub_id)
            d = _checked(store.directory(hub_id, versions[-1][0]) or b"", s)
            if len(versions) > 1:
                previous = _checked(store.directory(hub_id, versions[-2][0]) or b"", s)
            else:  # its first version: it ran on its topology file before
                before = Topology.load(s.topology)
        finally:
            store.close()
    else:
        raise UsageError(N_("give a FILE or --hub"))
    report = _report(d, previous.topology if previous is not None else before,
                     previous.version if previous is not None else (0 if before is not None else None))
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=1))
        return
    click.echo(_("directory version {version}, issued {issued}, signed by {signer}: {hubs} hubs, {agencies} agencies",
                 version=d.version, issued=d.issued, signer=report["signer"], hubs=report["hubs"],
                 agencies=report["agencies"]))
    click.echo(_("changes from version {version}:", version=report["previous"]) if previous is not None
               else _("changes from the topology file it ran on before:") if before is not None
               else _("changes: (no version before it here)"))
    for what, items in report["changes"].items():
        if items:
            shown = [i if isinstance(i, str) else _("{code} (hub {before} -> {now})", code=i[0], before=i[1], now=i[2])
                     for i in items]
            label = _(CHANGE_LABELS[what])
            click.echo("  " + label + ": " + ", ".join(shown))


def _checked(data: bytes, s: Settings) -> Directory:
    return directory.read(data, trust=TrustStore.load(s.pki), authorities=s.keys.authorities())


def _report(d: Directory, before: Topology | None, previous: int | None) -> dict[str, Any]:
    """``previous``: the version ``before`` was (0: the topology file), None when nothing came before."""
    diff = directory.changes(before, d.topology)
    return {"version": d.version, "issued": d.issued, "digest": d.digest,
            "signer": d.signer.subject.rfc4514_string(), "hubs": len(d.topology.hubs),
            "agencies": len(d.topology.agencies), "previous": previous,
            "changes": {f: [list(i) if isinstance(i, tuple) else i for i in getattr(diff, f)]
                        for f in diff.__dataclass_fields__}}


def _yaml(data: bytes, source: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser, when PyYAML was built with it
    try:
        raw = yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise UsageError(N_("{source} is not valid YAML: {reason}"), source=source, reason=str(exc)) from None
    if not isinstance(raw, dict):
        raise UsageError(N_("{source} is not a topology"), source=source)
    return raw


def _next_version(output: Path) -> int:
    """One more than the version of the directory already at ``output`` (its payload, unchecked:
    only its number is read), else 1."""
    try:
        outer = json.loads(output.read_bytes())
        return int(json.loads(base64.b64decode(outer["payload"]))["version"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return 1
