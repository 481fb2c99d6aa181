"""``lienthong audit``: trails, receipts, the audit log, evidence bundles."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from broker.cli.app import load_topology, main, read_file, settings
from broker.cli.clients import hub_key
from broker.core import errors, receipts, wire
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.i18n import N_, _
from broker.ops.audit import LogPolicy, collect, verified_timeline, verify_log
from broker.ops.bundle import export_bundle, verify_bundle
from broker.relay.assemble import hub_certificates, hub_stores
from broker.relay.checkpoints import checkpoint
from broker.relay.store import SqlStore, open_store
from broker.settings import Settings


@main.group()
def audit() -> None:
    """Auditors: trails, receipts, the audit log, evidence bundles (offline)."""


@audit.command("trail")
@click.argument("document_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_trail(document_id: str, as_json: bool) -> None:
    """The hop-by-hop timeline of DOCUMENT_ID, each record's hub signature checked."""
    s = settings()
    topology = load_topology(s)
    trust = TrustStore.load(s.pki)
    trail = collect(hub_stores(s), document_id)
    if not trail.rows:
        raise errors.UsageError(N_("nothing is recorded about document {document_id!r}"), document_id=document_id)
    out = verified_timeline(trail, hub_certificates(s.pki, topology, trust), trust)
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    for e in out:
        what = f"{e['kind']} {e['verdict']}" + (f" {e['code']}" if e["code"] else "")
        click.echo(_("{at}  {hub:9} #{seq:<5} {what:24} -> {targets}  [{digest}] signature {signature}",
                     at=e["at"], hub=e["hub"], seq=e["seq"], what=what, targets=", ".join(e["targets"]),
                     digest=e["digest"][:12], signature=e["signature"]))


@audit.command("verify-receipt")
@click.argument("receipt_file")
@click.option("--document", "document_file", default=None, help="The document the receipt must speak of.")
def audit_verify_receipt(receipt_file: str, document_file: str | None) -> None:
    """Verify a hub receipt (signature, chain, hub), and that it binds DOCUMENT's exact bytes."""
    s = settings()
    r = receipts.verify(read_file(receipt_file), TrustStore.load(s.pki)).receipt
    if document_file is not None and wire.message_id(read_file(document_file)) != r.document_sha256:
        raise errors.AuditFailure(N_("the receipt speaks of other bytes than {file} (SHA-256 differs)"),
                                  file=document_file)
    click.echo(_("VERIFIED: receipt '{kind}' by hub {hub} at {time} for document {document_id} [{digest}] to "
                 "{sender}", kind=r.kind, hub=r.hub, time=r.time, document_id=r.document_id,
                 digest=r.document_sha256[:16], sender=r.sender) + (_(", code {code}", code=r.code) if r.code else ""))


@audit.command("verify-log")
@click.option("--hub", "hubs", multiple=True, help="Only these hubs (default: all).")
@click.option("--tsa-ca", "tsa_ca", default=None,
              help="PEM certificates of the time-stamping authority's CA: check each checkpoint's time-stamp.")
@click.option("--witness-within", "witness_within", type=float, default=None,
              help="Seconds within which every entry must be under a checkpoint a neighbour witnessed "
                   "[default: settings.audit.witness_within_seconds, else 900].")
def audit_verify_log(hubs: tuple[str, ...], tsa_ca: str | None, witness_within: float | None) -> None:
    """Recompute each hub's audit log hash chain, check its signed checkpoints, what its neighbours
    witnessed of them (an entry older than --witness-within must be under a witnessed checkpoint)
    and, with --tsa-ca, their time-stamps.  What cannot be checked here is said, and is no pass."""
    s = settings()
    topo = load_topology(s)
    policy = LogPolicy(witness_within=witness_within if witness_within is not None
                       else topo.settings.audit.witness_within_seconds,
                       stamps_expected=bool(topo.settings.audit.tsa_url))
    certs = hub_certificates(s.pki, topo, TrustStore.load(s.pki))
    here = _logs_here(s, topo)
    witnesses = [r for st in {id(st): st for st in here.values()}.values() for r in st.audit_rows()
                 if r.kind == "witness"]
    broken, unchecked = [], []
    now = time.time()
    for hub in hubs or tuple(topo.hubs):
        if hub not in here:
            click.echo(f"{hub:9} NOT CHECKED: its log is not on this machine")
            unchecked.append(f"hub {hub}: its log is not here")
            continue
        store = here[hub]
        neighbours = topo.neighbours(hub)
        report = verify_log(store.audit_rows(hub=hub), store.checkpoints(hub), hub, certs, witnesses,
                            store.timestamps(hub), Path(tsa_ca) if tsa_ca else None, neighbours=neighbours,
                            absent=[n for n in neighbours if n not in here], now=now, policy=policy)
        state = (_("intact") if report.ok
                 else _("BROKEN at entry {seq}: {reason}", seq=report.broken_at, reason=report.reason)
                 if report.broken_at is not None else _("NOT CHECKED in full"))
        stamped = _("{n:4} time-stamped ", n=report.time_stamped) if tsa_ca else ""
        tail = (_("unwitnessed tail {n} entries ({seconds} s) ", n=report.unwitnessed,
                  seconds=f"{now - report.unwitnessed_since:.0f}") if report.unwitnessed_since is not None else "")
        click.echo(_("{hub:9} {entries:7} entries {checkpoints:4} checkpoints {witnessed:4} witnessed {stamped}"
                     "{tail} {state}", hub=hub, entries=report.entries, checkpoints=report.checkpoints,
                     witnessed=report.witnessed, stamped=stamped, tail=tail, state=state))
        if report.stamped:
            (first_seq, first), (last_seq, last) = report.stamped[0], report.stamped[-1]
            click.echo(_("          time-stamped: entry {first_seq} at {first} UTC ... entry {last_seq} at {last} UTC "
                         "(by the authority's clock)", first_seq=first_seq, first=f"{first:%Y-%m-%d %H:%M:%S}",
                         last_seq=last_seq, last=f"{last:%Y-%m-%d %H:%M:%S}"))
        for item in report.not_checked:
            click.echo(_("          not checked: {item}", item=item))
        if report.broken_at is not None:
            broken.append(f"hub {hub}: {report.reason}")
        unchecked += [f"hub {hub}: {item}" for item in report.not_checked]
    if broken:
        raise errors.AuditFailure("; ".join(broken))
    if unchecked:
        raise errors.AuditIncomplete(N_("not checked: {items}"), items="; ".join(unchecked))


def _logs_here(s: Settings, topo: Topology) -> dict[str, SqlStore]:
    """The audit logs on this machine, by hub: every hub's in a PostgreSQL state store, else
    each hub whose SQLite file exists (none is made here)."""
    if s.state_url.startswith(("postgresql://", "postgres://")):
        store = open_store(s.state_url)
        return dict.fromkeys(topo.hubs, store)
    return {h: open_store(s.state_url, hub=h) for h in topo.hubs if (Path(s.state_url) / f"{h}.sqlite3").exists()}


@audit.command("checkpoint")
@click.argument("hub_id")
def audit_checkpoint(hub_id: str) -> None:
    """Sign the current head of HUB_ID's audit log (hubs also do this every minute)."""
    s = settings()
    load_topology(s)
    head = checkpoint(open_store(s.state_url, hub=hub_id), hub_id, hub_key(s, hub_id))
    click.echo(_("checkpoint of {hub}: {head}", hub=hub_id,
                 head=_("entry {seq} {hash}", seq=head[0], hash=head[1][:16]) if head else _("empty log")))


@audit.command("export")
@click.argument("document_id")
@click.argument("out")
def audit_export(document_id: str, out: str) -> None:
    """Write the evidence bundle of DOCUMENT_ID into the new folder OUT."""
    s = settings()
    topology = load_topology(s)
    stores = hub_stores(s)
    folder = export_bundle(collect(stores, document_id), stores, s.pki, topology, Path(out),
                           topology_file=s.topology)
    click.echo(_("evidence bundle of {document_id} in {folder}", document_id=document_id, folder=folder))


@audit.command("verify-bundle")
@click.argument("folder")
@click.option("--trust", "trust_dir", required=True,
              help="YOUR trust store: the roots and CRLs you trust (the bundle's own are never trusted).")
@click.option("--directory", "directory_file", default=None,
              help="YOUR agency directory (topology YAML) binding signers to agency codes "
                   "[default: directory.yaml in --trust].")
@click.option("--at", "at_time", default=None, help="Judge certificates as of this ISO time "
              "(default: the time each hub recorded).")
def audit_verify_bundle(folder: str, trust_dir: str, directory_file: str | None, at_time: str | None) -> None:
    """Verify an evidence bundle offline (no broker, no database) against your own trust anchors
    and agency directory."""
    directory = Path(directory_file) if directory_file else Path(trust_dir) / "directory.yaml"
    if not directory.is_file():
        raise errors.UsageError(N_("no agency directory at {path}: give --directory, the directory you trust"),
                                path=directory)
    at = datetime.fromisoformat(at_time).replace(tzinfo=UTC) if at_time else None
    r = verify_bundle(Path(folder), trust=TrustStore.load(trust_dir), directory=Topology.load(directory), at=at)
    click.echo(_("VERIFIED: document {document_id} from {sender} to {to} (as signed): {messages} signed message(s), "
                 "{records} hop record(s) via {hubs}, {receipts} receipt(s); delivered to {recipients}",
                 document_id=r.document_id, sender=r.sender, to=", ".join(r.recipients), messages=r.messages,
                 records=r.hop_records, hubs=", ".join(r.hubs) or _("no hub"), receipts=r.receipts,
                 recipients=", ".join(r.delivered_to) or _("nobody")))

