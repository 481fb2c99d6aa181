"""The ``lienthong`` command: a thin layer over the core.

Every command exits 0 when all is well.  A refusal prints one line
``ERROR <CODE>: <sentence>`` on stderr (codes: ``lienthong errors`` and
docs/errors.md) and exits 1 (message rejected) or 2 (usage/configuration);
an unexpected failure prints ``ERROR INTERNAL: ...`` and exits 70.
Never a traceback, unless ``--debug`` asks for one.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from broker import __version__, logs
from broker.core import errors, wire

EXIT_REJECTED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 70


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise errors.UsageError(f"cannot read {path}: {exc.strerror}") from None


def _fail(exc: errors.LienthongError) -> NoReturn:
    click.echo(exc.line(), err=True)
    sys.exit(EXIT_REJECTED if isinstance(exc, errors.RejectedInput) else EXIT_USAGE)


def _summary(checked: Any) -> dict[str, Any]:
    m = checked.message
    out: dict[str, Any] = {
        "kind": m.kind, "document_id": m.document_id, "from": m.sender.organ_id,
        "to": list(m.recipient_ids), "sha256": checked.sha256,
    }
    if m.kind == "status":
        out["status_code"] = m.status_code
    else:
        out["attachments"] = [{"content_id": a.content_id, "name": a.name} for a in m.attachments]
    if m.business is not None:
        out["business"] = {"type": m.business.doc_type, "meaning": m.business.meaning,
                           "document_id": m.business.document_id}
    if checked.signature is not None:
        out["signer"] = checked.signature.signer.subject.rfc4514_string()
        out["chain"] = [c.subject.rfc4514_string() for c in checked.signature.chain.path]
    return out


def _print(summary: dict[str, Any], as_json: bool, verdict: str) -> None:
    if as_json:
        click.echo(json.dumps({"verdict": verdict, **summary}, ensure_ascii=False))
        return
    click.echo(f"{verdict}: {summary['kind']} {summary['document_id']} from {summary['from']} "
               f"to {', '.join(summary['to'])}")
    if "signer" in summary:
        click.echo(f"  signed by {summary['signer']}")
    click.echo(f"  sha256 {summary['sha256']}")


class _Group(click.Group):
    """Turns every error into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.LienthongError as exc:
            _fail(exc)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if ctx.obj and ctx.obj.get("debug"):
                raise
            logs.get_logger().error("internal error", error=repr(exc))
            click.echo(f"ERROR INTERNAL: unexpected {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="lienthong")
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def main(ctx: click.Context, log_json: bool, log_level: str, debug: bool) -> None:
    """lienthong: relay for official electronic documents (edXML) on RabbitMQ."""
    logs.configure(json=log_json, level=log_level)
    ctx.obj = {"debug": debug}


def _limits(max_bytes: int | None) -> Any:
    from broker.core.parsing import DEFAULT_LIMITS, ParseLimits

    return ParseLimits(max_bytes=max_bytes, max_depth=DEFAULT_LIMITS.max_depth) if max_bytes else DEFAULT_LIMITS


@main.command()
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--max-bytes", type=int, default=None, help="Size limit (default 50 MiB).")
def validate(file: str, as_json: bool, max_bytes: int | None) -> None:
    """Check FILE against the edXML schema and model (no signature check)."""
    from broker.core.validation import check

    checked = check(_read(file), limits=_limits(max_bytes), require_signature=False)
    _print(_summary(checked), as_json, "VALID")


@main.command()
@click.argument("file")
@click.option("--key", "key_path", required=True, help="PEM private key of the signing agency.")
@click.option("--cert", "cert_path", required=True, help="PEM certificate (then intermediates).")
@click.option("-o", "--output", required=True, help="Where to write the signed message.")
def sign(file: str, key_path: str, cert_path: str, output: str) -> None:
    """Sign FILE with an enveloped XMLDSig signature (RSA/ECDSA, SHA-256)."""
    from broker.core.signer import SigningKey
    from broker.core.signer import sign as do_sign

    signed = do_sign(_read(file), SigningKey.load(key_path, cert_path))
    Path(output).write_bytes(signed)
    click.echo(f"signed {file} -> {output}")


@main.command()
@click.argument("file")
@click.option("--trust", "trust_dir", required=True, help="Trust store directory (PEM anchors and CRLs).")
@click.option("--topology", "topology_path", default="config/topology.yaml", show_default=True,
              help="Agency directory binding signers to agency codes.")
@click.option("--no-directory", is_flag=True, help="Skip the signer = From check (diagnostics only).")
@click.option("--at", "at_time", default=None, help="Verify as of this ISO time (default: now).")
@click.option("--allow-sha1", is_flag=True, help="Accept SHA-1 signatures from legacy senders.")
@click.option("--no-crl", is_flag=True, help="Do not require a current CRL (diagnostics only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(file: str, trust_dir: str, topology_path: str, no_directory: bool, at_time: str | None,
           allow_sha1: bool, no_crl: bool, as_json: bool) -> None:
    """Verify FILE: schema, signature, chain to the trust store, revocation, signer = From."""
    from broker.core.topology import Topology
    from broker.core.trust import TrustStore
    from broker.core.validation import check
    from broker.core.verifier import VerifyPolicy

    at = None
    if at_time:
        try:
            at = datetime.fromisoformat(at_time)
        except ValueError:
            raise errors.UsageError(f"--at {at_time!r} is not an ISO date/time") from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    checked = check(_read(file), trust=TrustStore.load(trust_dir, require_crl=not no_crl),
                    topology=None if no_directory else Topology.load(topology_path),
                    policy=VerifyPolicy(allow_sha1=allow_sha1), at=at)
    _print(_summary(checked), as_json, "VERIFIED")


@main.command("new-document")
@click.option("--from", "sender", required=True, help="Sender agency code.")
@click.option("--to", "recipients", required=True, multiple=True, help="Recipient agency code (repeat).")
@click.option("--subject", required=True)
@click.option("--attach", "attachments", multiple=True, help="File to attach (repeat).")
@click.option("--document-id", default=None)
@click.option("--topology", "topology_path", default="config/topology.yaml", show_default=True)
@click.option("-o", "--output", required=True)
def new_document(sender: str, recipients: tuple[str, ...], subject: str, attachments: tuple[str, ...],
                 document_id: str | None, topology_path: str, output: str) -> None:
    """Write a new, unsigned edXML document (names taken from the agency directory)."""
    import mimetypes

    from broker.core.edxml import Organ, build_document
    from broker.core.topology import Topology

    topo = Topology.load(topology_path)

    def organ(code: str) -> Organ:
        return Organ(code, topo.agency(code).name)

    files = [(Path(a).name, mimetypes.guess_type(a)[0] or "application/octet-stream", _read(a))
             for a in attachments]
    data = build_document(organ(sender), [organ(r) for r in recipients], subject=subject,
                          document_id=document_id, attachments=files)
    Path(output).write_bytes(data)
    click.echo(f"wrote {output}")


@main.group()
def pki() -> None:
    """Development PKI (FOR DEVELOPMENT ONLY)."""


@pki.command("init")
@click.argument("directory")
@click.option("--topology", "topology_path", default="config/topology.yaml", show_default=True)
def pki_init(directory: str, topology_path: str) -> None:
    """Create a root CA, hub and agency keys and certificates, and a CRL in DIRECTORY."""
    from broker.core.topology import Topology
    from broker.relay import devpki

    topo = Topology.load(topology_path)
    click.secho("WARNING: " + devpki.WARNING, fg="red", bold=True, err=True)
    d = devpki.init(directory, topo)
    click.echo(f"dev PKI in {d}: anchor {d / 'root-ca.pem'}, CRL {d / 'root-ca.crl.pem'}, "
               f"{len(topo.hubs)} hubs, {len(topo.agencies)} agencies")


@pki.command("revoke")
@click.argument("directory")
@click.argument("certs", nargs=-1, required=True)
def pki_revoke(directory: str, certs: tuple[str, ...]) -> None:
    """Revoke certificates (PEM files) in the dev PKI's CRL."""
    from broker.relay import devpki

    click.secho("WARNING: " + devpki.WARNING, fg="red", bold=True, err=True)
    devpki.revoke(directory, [Path(c) for c in certs])
    click.echo(f"revoked {len(certs)} certificate(s); CRL re-signed")


def _settings() -> Any:
    from broker.settings import Settings

    return Settings.from_env()


@main.group("broker")
def broker_group() -> None:
    """RabbitMQ layout of the topology."""


@broker_group.command("setup")
def broker_setup() -> None:
    """Declare vhosts, users, permissions, exchanges and queues (idempotent)."""
    from broker.core.topology import Topology
    from broker.relay.provision import Credentials, apply

    s = _settings()
    counts = apply(Topology.load(s.topology), Credentials(s.credentials), s.mgmt_url)
    click.echo("broker setup: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@main.group()
def hub() -> None:
    """Hub workers."""


@hub.command("run")
@click.argument("hub_id")
@click.option("--prefetch", default=256, show_default=True, help="Unacked messages in flight.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
def hub_run(hub_id: str, prefetch: int, metrics_port: int | None) -> None:
    """Run one worker of HUB_ID until stopped (SIGTERM/SIGINT)."""
    from broker.relay.assemble import start_hub
    from broker.relay.provision import Credentials
    from broker.relay.worker import HubWorker

    s = _settings()
    hop, store = start_hub(s, hub_id)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    HubWorker(hub_id, hop.topology, hop, store, Credentials(s.credentials), prefetch=prefetch).run()


@main.command()
@click.option("--workers", default=1, show_default=True, help="Worker processes per hub.")
@click.option("--demo/--no-demo", default=False, help="Send a document across provinces and show it arrive.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the hubs once the demo document arrived.")
def up(workers: int, demo: bool, exit_after_demo: bool) -> None:
    """Run the whole relay of the topology on this machine (dev PKI, broker setup, every hub)."""
    from broker.relay.supervise import run_all

    sys.exit(run_all(_settings(), workers=workers, demo=demo, exit_after_demo=exit_after_demo))


@main.command()
@click.argument("file")
@click.option("--as", "agency", required=True, help="The sending agency (its own credentials are used).")
def send(file: str, agency: str) -> None:
    """Push a signed edXML FILE to the agency's hub over AMQP."""
    from adapters.sdk import AgencyClient

    message_id = AgencyClient.from_settings(agency, _settings()).send(_read(file))
    click.echo(f"sent {file} as {agency}: message {message_id}")


@main.command()
@click.argument("agency")
@click.option("--fetch", "fetch_dir", default=None, help="Take messages into this folder (acked once written).")
@click.option("--wait", default=0.0, show_default=True, help="Seconds to wait for a first message.")
@click.option("--limit", default=100, show_default=True)
def inbox(agency: str, fetch_dir: str | None, wait: float, limit: int) -> None:
    """List the agency's inbox, or with --fetch take its messages into a folder."""
    from adapters.sdk import AgencyClient, save_item

    client = AgencyClient.from_settings(agency, _settings())
    if fetch_dir is None:
        items = client.peek(limit=limit)
        for item in items:
            click.echo(f"{item.kind:8} {item.message_id}  hops={len(item.trace)}  {len(item.body)} bytes")
        click.echo(f"{len(items)} message(s) in the inbox of {agency}")
        return
    n = client.fetch(lambda item: click.echo(f"{item.kind:8} -> {save_item(Path(fetch_dir), item)}"),
                     limit=limit, wait=wait)
    click.echo(f"took {n} message(s) into {fetch_dir}")


@main.command("status-send")
@click.option("--as", "agency", required=True, help="The agency sending the status (it signs it).")
@click.option("--document", "document_file", required=True, help="The received document the status is about.")
@click.option("--code", "status_code", required=True,
              type=click.Choice(["01", "02", "03", "04", "05", "06", "13", "15", "16"]),
              help="01 received, 02 rejected, 03 accepted, 04 assigned, 05 processing, 06 completed, "
                   "13 revocation requested, 15 change accepted, 16 change refused.")
@click.option("--description", default="", help="Free text for the sender.")
@click.option("-o", "--output", default=None, help="Also keep the signed status here.")
def status_send(agency: str, document_file: str, status_code: str, description: str, output: str | None) -> None:
    """Sign an edXML status about a received document and send it back through the hubs."""
    from adapters.sdk import AgencyClient

    s = _settings()
    client = AgencyClient.from_settings(agency, s)
    signed = client.status_for(_read(document_file), status_code, description=description,
                               key=_agency_key(s, agency))
    if output:
        Path(output).write_bytes(signed)
    message_id = client.send(signed)
    click.echo(f"status {status_code} sent as {agency}: message {message_id}")


def _agency_key(s: Any, agency: str) -> Any:
    from broker.core.signer import SigningKey

    d = s.pki / "agencies" / agency
    return SigningKey.load(d / "key.pem", d / "cert.pem")


@main.group()
def audit() -> None:
    """Auditors: trails, receipts, the audit log, evidence bundles (offline)."""


def _stores(s: Any) -> list[Any]:
    from broker.core.topology import Topology
    from broker.relay.store import open_store

    if s.state_url.startswith(("postgresql://", "postgres://")):
        return [open_store(s.state_url)]
    return [open_store(s.state_url, hub=h) for h in Topology.load(s.topology).hubs
            if (Path(s.state_url) / f"{h}.sqlite3").exists()]


@audit.command("trail")
@click.argument("document_id")
@click.option("--json", "as_json", is_flag=True)
def audit_trail(document_id: str, as_json: bool) -> None:
    """The hop-by-hop timeline of DOCUMENT_ID, each record's hub signature checked."""
    from broker.core.hoprecords import verify_record
    from broker.core.topology import Topology
    from broker.core.trust import TrustStore
    from broker.ops.audit import collect
    from broker.relay.assemble import hub_certificates

    s = _settings()
    topo = Topology.load(s.topology)
    certs = hub_certificates(s.pki, topo, TrustStore.load(s.pki))
    trail = collect(_stores(s), document_id)
    if not trail.rows:
        raise errors.UsageError(f"nothing is recorded about document {document_id!r}")
    out: list[dict[str, Any]] = []
    for row in trail.rows:
        if row.kind == "hop":
            rec = verify_record(row.body, certs[row.hub])
            out.append({"hub": row.hub, "seq": row.seq, "at": rec.at, "kind": "hop", "verdict": rec.verdict,
                        "code": rec.code, "targets": list(rec.targets), "digest": rec.digest,
                        "message": rec.extra.get("kind", ""), "signature": "ok"})
        else:
            from broker.core import receipts

            r = receipts.verify(row.body.encode(), TrustStore.load(s.pki)).receipt
            out.append({"hub": row.hub, "seq": row.seq, "at": r.time, "kind": "receipt", "verdict": r.kind,
                        "code": r.code, "targets": [r.sender], "digest": r.document_sha256, "signature": "ok"})
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    for e in out:
        what = f"{e['kind']} {e['verdict']}" + (f" {e['code']}" if e["code"] else "")
        click.echo(f"{e['at']}  {e['hub']:9} #{e['seq']:<5} {what:24} -> {', '.join(e['targets'])}  "
                   f"[{e['digest'][:12]}] signature {e['signature']}")


@audit.command("verify-receipt")
@click.argument("receipt_file")
@click.option("--document", "document_file", default=None, help="The document the receipt must speak of.")
def audit_verify_receipt(receipt_file: str, document_file: str | None) -> None:
    """Verify a hub receipt (signature, chain, hub), and that it binds DOCUMENT's exact bytes."""

    from broker.core import receipts
    from broker.core.trust import TrustStore

    s = _settings()
    r = receipts.verify(_read(receipt_file), TrustStore.load(s.pki)).receipt
    if document_file is not None and wire.message_id(_read(document_file)) != r.document_sha256:
        raise errors.AuditFailure(f"the receipt speaks of other bytes than {document_file} (SHA-256 differs)")
    click.echo(f"VERIFIED: receipt '{r.kind}' by hub {r.hub} at {r.time} for document {r.document_id} "
               f"[{r.document_sha256[:16]}] to {r.sender}" + (f", code {r.code}" if r.code else ""))


@audit.command("verify-log")
@click.option("--hub", "hubs", multiple=True, help="Only these hubs (default: all).")
def audit_verify_log(hubs: tuple[str, ...]) -> None:
    """Recompute each hub's audit log hash chain and check its signed checkpoints."""
    from broker.core.topology import Topology
    from broker.core.trust import TrustStore
    from broker.ops.audit import verify_log
    from broker.relay.assemble import hub_certificates
    from broker.relay.store import open_store

    s = _settings()
    topo = Topology.load(s.topology)
    certs = hub_certificates(s.pki, topo, TrustStore.load(s.pki))
    broken = []
    for hub in hubs or tuple(topo.hubs):
        store = open_store(s.state_url, hub=hub)
        report = verify_log(store.audit_rows(hub=hub), store.checkpoints(hub), hub, certs[hub])
        state = "intact" if report.ok else f"BROKEN at entry {report.broken_at}: {report.reason}"
        click.echo(f"{hub:9} {report.entries:7} entries {report.checkpoints:4} checkpoints  {state}")
        if not report.ok:
            broken.append(f"hub {hub}: {report.reason}")
    if broken:
        raise errors.AuditFailure("; ".join(broken))


@audit.command("checkpoint")
@click.argument("hub_id")
def audit_checkpoint(hub_id: str) -> None:
    """Sign the current head of HUB_ID's audit log (hubs also do this every minute)."""
    from broker.relay.checkpoints import checkpoint
    from broker.relay.store import open_store

    s = _settings()
    head = checkpoint(open_store(s.state_url, hub=hub_id), hub_id, _hub_key(s, hub_id))
    click.echo(f"checkpoint of {hub_id}: " + (f"entry {head[0]} {head[1][:16]}" if head else "empty log"))


def _hub_key(s: Any, hub_id: str) -> Any:
    from broker.core.signer import SigningKey

    d = s.pki / "hubs" / hub_id
    return SigningKey.load(d / "key.pem", d / "cert.pem")


@audit.command("export")
@click.argument("document_id")
@click.argument("out")
def audit_export(document_id: str, out: str) -> None:
    """Write the evidence bundle of DOCUMENT_ID into the new folder OUT."""
    from broker.core.topology import Topology
    from broker.ops.audit import collect, export_bundle

    s = _settings()
    stores = _stores(s)
    folder = export_bundle(collect(stores, document_id), stores, s.pki, Topology.load(s.topology), Path(out),
                           topology_file=s.topology)
    click.echo(f"evidence bundle of {document_id} in {folder}")


@audit.command("verify-bundle")
@click.argument("folder")
@click.option("--at", "at_time", default=None, help="Judge certificates as of this ISO time "
              "(default: the time each hub recorded).")
def audit_verify_bundle(folder: str, at_time: str | None) -> None:
    """Verify an evidence bundle with nothing but its contents (no broker, no database)."""
    from broker.ops.audit import verify_bundle

    at = datetime.fromisoformat(at_time).replace(tzinfo=UTC) if at_time else None
    r = verify_bundle(Path(folder), at=at)
    click.echo(f"VERIFIED: document {r.document_id}: {r.messages} signed message(s), {r.hop_records} hop "
               f"record(s) via {', '.join(dict.fromkeys(r.hubs))}, {r.receipts} receipt(s); "
               f"delivered to {', '.join(sorted(set(r.delivered_to))) or 'nobody'}")


@main.group()
def gateway() -> None:
    """REST gateway for document systems (HTTP + JSON)."""


@gateway.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def gateway_run(host: str, port: int) -> None:
    """Serve the REST gateway (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from adapters.gateway import create_app

    uvicorn.run(create_app(_settings()), host=host, port=port, log_level="warning")


@gateway.command("token")
@click.argument("agency")
def gateway_token(agency: str) -> None:
    """Issue a bearer token for AGENCY (printed once; only its hash is kept)."""
    from adapters.gateway import issue_token

    click.echo(issue_token(_settings(), agency))


@gateway.command("openapi")
def gateway_openapi() -> None:
    """Print the gateway's OpenAPI description (docs/openapi.json)."""
    from adapters.gateway import create_app

    click.echo(json.dumps(create_app(_settings()).openapi(), indent=2, ensure_ascii=False))


@main.group()
def folder() -> None:
    """Folder drop for legacy systems."""


@folder.command("run")
@click.argument("agency")
@click.option("--root", required=True, help="The agency's folder (outbox/, inbox/, sent/, failed/ ...).")
@click.option("--key", "key_path", default=None, help="Sign unsigned files with this key...")
@click.option("--cert", "cert_path", default=None, help="...and certificate.")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between rounds.")
def folder_run(agency: str, root: str, key_path: str | None, cert_path: str | None, once: bool,
               interval: float) -> None:
    """Send what is dropped in ROOT/outbox, receive into ROOT/inbox, until stopped."""
    from adapters.folder import FolderAdapter
    from adapters.sdk import AgencyClient
    from broker.core.signer import SigningKey

    if bool(key_path) != bool(cert_path):
        raise errors.UsageError("--key and --cert go together")
    key = SigningKey.load(key_path, cert_path) if key_path and cert_path else None
    adapter = FolderAdapter(AgencyClient.from_settings(agency, _settings()), Path(root), key)
    if once:
        st = adapter.run_once()
        click.echo(f"sent {st.sent}, failed {st.failed}, received {st.received}")
        return
    adapter.run(interval=interval)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Per hub and agency inbox: depth, unacked, consumers, rates, oldest message, parked, certificate
    expiry, and warnings by the thresholds of ``settings.alerts``."""
    from broker.ops import queues

    hubs = queues.status(_settings())
    if as_json:
        click.echo(json.dumps(queues.as_dicts(hubs), ensure_ascii=False, indent=2))
        return
    click.echo(f"{'hub / queue':34} {'ready':>7} {'unacked':>8} {'cons':>5} {'in/s':>7} {'out/s':>7} {'oldest':>7}")
    for h in hubs:
        cert = f"cert {h.cert_days_left} d" if h.cert_days_left is not None else "no cert"
        click.echo(f"{h.hub} ({h.tier}) parked {h.parked}, retrying {h.retrying}, "
                   f"unroutable {h.unroutable}, {cert}")
        for qs in ([h.ingress] if h.ingress else []) + h.inboxes:
            oldest = queues.format_age(qs.oldest_seconds) if qs.oldest_seconds is not None else "-"
            click.echo(f"  {qs.name:32} {qs.messages:7} {qs.unacked:8} {qs.consumers:5} "
                       f"{qs.in_rate:7.1f} {qs.out_rate:7.1f} {oldest:>7}")
        for w in h.warnings:
            click.secho(f"  WARNING: {w}", fg="yellow")


@main.command()
@click.option("--from", "start", required=True, help="First day, YYYY-MM-DD (local time).")
@click.option("--to", "end", required=True, help="Last day, YYYY-MM-DD (included).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV (one row per agency and per level) instead of tables.")
@click.option("--issued", "issued_file", default=None,
              help="CSV organ_id,issued: the agencies' registers of outgoing documents (paper included).")
@click.option("-o", "--output", default=None, help="Write to this file instead of standard output.")
def report(start: str, end: str, as_csv: bool, issued_file: str | None, output: str | None) -> None:
    """The compliance report: per agency and level, documents sent and received, share signed and
    sent electronically against the targets, share acknowledged (01/03) in time, statuses."""
    from broker.core.topology import Topology
    from broker.ops import report as rep

    s = _settings()
    topology = Topology.load(s.topology)
    cfg = rep.ReportSettings.from_topology(topology)
    t0, t1 = rep.period(rep.parse_day(start), rep.parse_day(end), cfg.offset)
    issued = rep.read_issued(Path(issued_file), topology) if issued_file else None
    built = rep.build(_stores(s), topology, t0, t1, issued=issued)
    text = rep.to_csv(built) if as_csv else rep.to_text(built)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--port", default=8090, show_default=True)
def dashboard(port: int) -> None:
    """Serve the operators' dashboard on 127.0.0.1 (hub tree, backlogs, rejections, parked)."""
    import uvicorn

    from broker.ops.dashboard import create_app

    uvicorn.run(create_app(_settings()), host="127.0.0.1", port=port, log_level="warning")


@main.group()
def dlq() -> None:
    """Parked messages (the dead-letter queue of each hub)."""


def _select(digest: str | None, code: str | None) -> Any:
    return lambda p: (digest is None or p.digest.startswith(digest)) and (code is None or p.code == code)


@dlq.command("list")
@click.option("--hub", "hubs", multiple=True, help="Only these hubs (default: all).")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(hubs: tuple[str, ...], as_json: bool) -> None:
    """Parked messages with their codes and reasons (they stay parked)."""
    from broker.core.topology import Topology
    from broker.ops import queues

    s = _settings()
    rows = [p for h in hubs or tuple(Topology.load(s.topology).hubs) for p in queues.list_parked(s, h)]
    if as_json:
        click.echo(json.dumps([{k: v for k, v in vars(p).items() if k not in ("body", "headers")} for p in rows],
                              ensure_ascii=False, indent=2))
        return
    for p in rows:
        click.echo(f"{p.hub:9} {p.digest[:16]}  {p.code:20} {p.size:8} B  {p.origin:22} {p.reason}")
    click.echo(f"{len(rows)} parked message(s)")


@dlq.command("show")
@click.argument("hub_id")
@click.argument("digest")
def dlq_show(hub_id: str, digest: str) -> None:
    """Headers and body of one parked message (DIGEST: its SHA-256, or a prefix)."""
    from broker.ops import queues

    found = [p for p in queues.list_parked(_settings(), hub_id) if p.digest.startswith(digest)]
    if not found:
        raise errors.NotFound(f"no parked message {digest!r} at hub {hub_id!r}")
    p = found[0]
    click.echo(json.dumps({k: v for k, v in p.headers.items() if isinstance(v, (str, int, float, list))},
                          ensure_ascii=False, indent=2, default=str))
    click.echo(p.body.decode("utf-8", errors="replace"))


@dlq.command("replay")
@click.argument("hub_id")
@click.option("--digest", default=None, help="Only this message (SHA-256 or prefix).")
@click.option("--code", default=None, help="Only messages parked with this code.")
def dlq_replay(hub_id: str, digest: str | None, code: str | None) -> None:
    """Take parked messages out of parking and through the full hop again (each exactly once)."""
    from broker.ops import queues

    if digest is None and code is None:
        raise errors.UsageError("name what to replay: --digest or --code")
    n = queues.replay(_settings(), hub_id, _select(digest, code))
    click.echo(f"replayed {n} message(s) at hub {hub_id}")


@dlq.command("purge")
@click.argument("hub_id")
@click.option("--digest", default=None)
@click.option("--code", default=None)
@click.option("--yes", is_flag=True, help="Really delete.")
def dlq_purge(hub_id: str, digest: str | None, code: str | None, yes: bool) -> None:
    """Delete parked messages for good (the audit log keeps their records)."""
    from broker.ops import queues

    if not yes:
        raise errors.UsageError("purge deletes messages for good: add --yes")
    n = queues.take_parked(_settings(), hub_id, _select(digest, code), lambda p: None)
    click.echo(f"purged {n} message(s) at hub {hub_id}")


@main.command("errors")
@click.option("--markdown", is_flag=True, help="Print docs/errors.md.")
def list_errors(markdown: bool) -> None:
    """List the stable error codes with their meaning."""
    if markdown:
        click.echo(errors_markdown(), nl=False)
        return
    for code, doc in error_codes():
        click.echo(f"{code:18} {doc}")


def errors_markdown() -> str:
    lines = ["# Error codes", "",
             "Every refusal lienthong makes carries one of these codes, printed by the CLI as",
             "`ERROR <CODE>: <sentence>` and carried in signed rejections. Codes are stable:",
             "they are never renamed or reused, only added. `lienthong errors` prints this list",
             "(`lienthong errors --markdown > docs/errors.md` regenerates this file).", "",
             "CLI exit codes: 0 good; 1 message rejected; 2 usage, configuration, access or audit failure;",
             "70 internal error.", "", "| code | meaning |", "|---|---|"]
    lines += [f"| `{c}` | {d} |" for c, d in error_codes()]
    return "\n".join(lines) + "\n"


INTERNAL_DOC = "An unexpected failure inside lienthong (a bug); details are in the log."


def error_codes() -> list[tuple[str, str]]:
    """Every error code defined in :mod:`broker.core.errors`, with its docstring."""
    seen: dict[str, str] = {}
    stack: list[type[errors.LienthongError]] = [errors.LienthongError]
    while stack:
        cls = stack.pop(0)
        doc = (cls.__doc__ or "").strip()
        seen.setdefault(cls.code, INTERNAL_DOC if cls is errors.LienthongError else doc)
        stack.extend(cls.__subclasses__())
    return sorted(seen.items())


if __name__ == "__main__":  # pragma: no cover
    main()
