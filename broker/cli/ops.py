"""Operators' commands: status, report, dashboard, parked messages, error codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from broker import i18n
from broker.cli.app import load_topology, main, settings
from broker.core import errors
from broker.i18n import N_, _
from broker.ops import queues, reasons, report_layout
from broker.ops import report as rep
from broker.relay.assemble import hub_stores


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Per hub and agency inbox: depth, unacked, consumers, rates, oldest message, parked, certificate
    expiry, and warnings by the thresholds of settings.alerts in the topology."""
    s = settings()
    load_topology(s)
    hubs = queues.status(s)
    if as_json:
        click.echo(json.dumps(queues.as_dicts(hubs), ensure_ascii=False, indent=2))
        return
    heads = [_("hub / queue"), _("ready"), _("unacked"), _("cons"), _("in/s"), _("out/s"), _("oldest")]
    click.echo(f"{heads[0]:34} {heads[1]:>7} {heads[2]:>8} {heads[3]:>5} {heads[4]:>7} {heads[5]:>7} {heads[6]:>7}")
    for h in hubs:
        if h.unreadable:
            click.echo(_("{hub} ({tier}) not readable from here", hub=h.hub, tier=report_layout.level_name(h.tier)))
            for w in h.warnings:
                click.secho(_("  WARNING: {warning}", warning=w), fg="yellow")
            continue
        cert = _("cert {days} d", days=h.cert_days_left) if h.cert_days_left is not None else _("no cert")
        click.echo(_("{hub} ({tier}) parked {parked}, retrying {retrying}, unroutable {unroutable}, {cert}",
                     hub=h.hub, tier=report_layout.level_name(h.tier), parked=h.parked, retrying=h.retrying,
                     unroutable=h.unroutable, cert=cert))
        for qs in ([h.ingress] if h.ingress else []) + h.inboxes + h.outbound:
            oldest = queues.format_age(qs.oldest_seconds) if qs.oldest_seconds is not None else "-"
            click.echo(f"  {qs.name:32} {qs.messages:7} {qs.unacked:8} {qs.consumers:5} "
                       f"{qs.in_rate:7.1f} {qs.out_rate:7.1f} {oldest:>7}")
        for w in h.warnings:
            click.secho(_("  WARNING: {warning}", warning=w), fg="yellow")


FORMATS = ("text", "csv", "xlsx", "pdf")


@main.command()
@click.option("--from", "start", required=True, help="First day, YYYY-MM-DD (local time).")
@click.option("--to", "end", required=True, help="Last day, YYYY-MM-DD (included).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="text (tables), csv (one row per agency and per level), xlsx (workbook with a chart) or "
                   "pdf (document with a chart); default: from the -o file's extension, else text.")
@click.option("--csv", "as_csv", is_flag=True, help="The same as --format csv.")
@click.option("--issued", "issued_file", default=None,
              help="CSV organ_id,issued: the agencies' registers of outgoing documents (paper included).")
@click.option("--unit", default=None,
              help="The reporting unit named on the report (default: settings.report.unit, else the top hub).")
@click.option("-o", "--output", default=None, help="Write to this file instead of standard output (xlsx, pdf: needed).")
def report(start: str, end: str, fmt: str | None, as_csv: bool, issued_file: str | None, unit: str | None,
           output: str | None) -> None:
    """The compliance report: per agency and level, documents sent and received, share signed and
    sent electronically against the targets, share acknowledged (01/03) in time, statuses."""
    suffix = Path(output).suffix.lstrip(".").lower() if output else ""
    fmt = "csv" if as_csv else fmt or (suffix if suffix in FORMATS else "text")
    if fmt in ("xlsx", "pdf") and not output:
        raise errors.UsageError(N_("--format {format} writes a file: give -o FILE"), format=fmt)
    s = settings()
    topology = load_topology(s)
    cfg = rep.ReportSettings.from_topology(topology)
    t0, t1 = rep.period(rep.parse_day(start), rep.parse_day(end), cfg.offset)
    issued = rep.read_issued(Path(issued_file), topology) if issued_file else None
    built = rep.build(hub_stores(s), topology, t0, t1, issued=issued)
    if fmt in ("xlsx", "pdf") and output:
        from datetime import date

        from broker.ops import report_pdf, report_xlsx

        top = next(h for h in topology.hubs.values() if h.parent is None)
        laid = report_layout.layout(built, unit=unit or cfg.unit or top.name, made=date.today())
        (report_xlsx if fmt == "xlsx" else report_pdf).write(laid, Path(output))
        click.echo(_("report written to {file}", file=output))
        return
    text = rep.to_csv(built) if fmt == "csv" else report_layout.to_text(built)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--port", default=8090, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Another name the dashboard may be reached by (e.g. your admin proxy's); repeat.")
@click.option("--token-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A private file holding a token: requests must send it (bearer, or ?token= once, then a cookie).")
def dashboard(port: int, host: str, allow_hosts: tuple[str, ...], token_file: str | None) -> None:
    """Serve the operators' dashboard (hub tree, backlogs, rejections, parked), on loopback by
    default; requests naming another host are refused (DNS rebinding)."""
    import uvicorn

    from broker.ops.dashboard import create_app

    token = Path(token_file).read_text(encoding="utf-8").strip() if token_file else None
    if token_file and not token:
        raise errors.UsageError(N_("{file} holds no token"), file=token_file)
    s = settings()
    load_topology(s)
    app = create_app(s, allow_hosts=(host, *allow_hosts), token=token, bind=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@main.group()
def dlq() -> None:
    """Parked messages (the dead-letter queue of each hub)."""


def _select(digest: str | None, code: str | None) -> Any:
    return lambda p: (digest is None or p.digest.startswith(digest)) and (code is None or p.code == code)


@dlq.command("list")
@click.option("--hub", "hubs", multiple=True, help="Only these hubs (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(hubs: tuple[str, ...], as_json: bool) -> None:
    """Parked messages with their codes and reasons (they stay parked)."""
    s = settings()
    rows = [p for h in hubs or tuple(load_topology(s).hubs) for p in queues.list_parked(s, h)]
    if as_json:
        click.echo(json.dumps([{k: v for k, v in vars(p).items() if k not in ("body", "headers")} for p in rows],
                              ensure_ascii=False, indent=2))
        return
    for p in rows:
        click.echo(f"{p.hub:9} {p.digest[:16]}  {p.code:20} {p.size:8} B  {p.origin:22} "
                   f"{reasons.text(p.code, p.reason)}")
    click.echo(_("{n} parked message(s)", n=len(rows)))


@dlq.command("show")
@click.argument("hub_id")
@click.argument("digest")
def dlq_show(hub_id: str, digest: str) -> None:
    """Headers and body of one parked message (DIGEST: its SHA-256, or a prefix)."""
    s = settings()
    load_topology(s)
    found = [p for p in queues.list_parked(s, hub_id) if p.digest.startswith(digest)]
    if not found:
        raise errors.NotFound(N_("no parked message {digest!r} at hub {hub!r}"), digest=digest, hub=hub_id)
    p = found[0]
    click.echo(f"{p.code}: {reasons.meaning(p.code) or p.reason}")
    click.echo(json.dumps({k: v for k, v in p.headers.items() if isinstance(v, (str, int, float, list))},
                          ensure_ascii=False, indent=2, default=str))
    click.echo(p.body.decode("utf-8", errors="replace"))


@dlq.command("replay")
@click.argument("hub_id")
@click.option("--digest", default=None, help="Only this message (SHA-256 or prefix).")
@click.option("--code", default=None, help="Only messages parked with this code.")
def dlq_replay(hub_id: str, digest: str | None, code: str | None) -> None:
    """Take parked messages out of parking and through the full hop again (each exactly once)."""
    if digest is None and code is None:
        raise errors.UsageError(N_("name what to replay: --digest or --code"))
    s = settings()
    load_topology(s)
    n = queues.replay(s, hub_id, _select(digest, code))
    click.echo(_("replayed {n} message(s) at hub {hub}", n=n, hub=hub_id))


@dlq.command("purge")
@click.argument("hub_id")
@click.option("--digest", default=None, help="Only this message (SHA-256 or prefix).")
@click.option("--code", default=None, help="Only messages parked with this code.")
@click.option("--yes", is_flag=True, help="Really delete.")
def dlq_purge(hub_id: str, digest: str | None, code: str | None, yes: bool) -> None:
    """Delete parked messages for good (the audit log keeps their records)."""
    if not yes:
        raise errors.UsageError(N_("purge deletes messages for good: add --yes"))
    s = settings()
    load_topology(s)
    n = queues.take_parked(s, hub_id, _select(digest, code), lambda p: None)
    click.echo(_("purged {n} message(s) at hub {hub}", n=n, hub=hub_id))


@main.command("errors")
@click.option("--markdown", is_flag=True, help="Print docs/errors.md.")
def list_errors(markdown: bool) -> None:
    """List the stable error codes with their meaning."""
    if markdown:
        from adapters.vxp import markdown as vxp_markdown

        click.echo(errors.markdown() + "\n" + vxp_markdown(), nl=False)
        return
    for code, doc in errors.codes():
        click.echo(f"{code:18} {i18n.current().gettext(doc)}")

