"""Commands on one message: validate, sign, verify, new-document (no broker needed)."""

from __future__ import annotations

import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from broker.cli.app import load_topology, main, read_file, settings
from broker.core import errors
from broker.core.edxml import Organ, build_document
from broker.core.parsing import DEFAULT_LIMITS, ParseLimits
from broker.core.signer import sign as do_sign
from broker.core.trust import TrustStore
from broker.core.validation import check, summary
from broker.core.verifier import VerifyPolicy
from broker.i18n import N_, _
from broker.relay.assemble import signing_key

KINDS = {"document": N_("document"), "status": N_("status")}


def _print(summary: dict[str, Any], as_json: bool, verdict: str) -> None:
    """``verdict`` (VALID, VERIFIED) stays as it is in JSON, for programs; people read it translated."""
    if as_json:
        click.echo(json.dumps({"verdict": verdict, **summary}, ensure_ascii=False))
        return
    shown = {"VALID": N_("VALID"), "VERIFIED": N_("VERIFIED")}[verdict]
    click.echo(_("{verdict}: {kind} {document_id} from {sender} to {recipients}", verdict=_(shown),
                 kind=_(KINDS.get(summary["kind"], summary["kind"])), document_id=summary["document_id"],
                 sender=summary["from"], recipients=", ".join(summary["to"])))
    if "signer" in summary:
        click.echo(_("  signed by {signer}", signer=summary["signer"]))
    for weak in summary.get("legacy_sha1", []):
        click.echo(_("  SHA-1 accepted (legacy policy): {what}", what=weak))
    click.echo(f"  sha256 {summary['sha256']}")


def _limits(max_bytes: int | None) -> Any:

    return ParseLimits(max_bytes=max_bytes, max_depth=DEFAULT_LIMITS.max_depth) if max_bytes else DEFAULT_LIMITS


@main.command()
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--max-bytes", type=int, default=None, help="Size limit (default 50 MiB).")
def validate(file: str, as_json: bool, max_bytes: int | None) -> None:
    """Check FILE against the edXML schema and model (no signature check)."""
    checked = check(read_file(file), limits=_limits(max_bytes), require_signature=False)
    _print(summary(checked), as_json, "VALID")


@main.command()
@click.argument("file")
@click.option("--key", "key_path", required=True,
              help="The signing agency's private key: a PEM file, or a PKCS#11 URI (pkcs11:...) of a key on a token.")
@click.option("--cert", "cert_path", required=True, help="PEM certificate (then intermediates).")
@click.option("-o", "--output", required=True, help="Where to write the signed message.")
def sign(file: str, key_path: str, cert_path: str, output: str) -> None:
    """Sign FILE with an enveloped XMLDSig signature (RSA/ECDSA, SHA-256)."""
    signed = do_sign(read_file(file), signing_key(key_path, cert_path, modules=settings().pkcs11_modules))
    Path(output).write_bytes(signed)
    click.echo(_("signed {file} -> {output}", file=file, output=output))


@main.command()
@click.argument("file")
@click.option("--trust", "trust_dir", required=True, help="Trust store directory (PEM anchors and CRLs).")
@click.option("--topology", "topology_path", default=None,
              help="Agency directory binding signers to agency codes (default: the topology the settings find).")
@click.option("--no-directory", is_flag=True, help="Skip the signer = From check (diagnostics only).")
@click.option("--at", "at_time", default=None, help="Verify as of this ISO time (default: now).")
@click.option("--allow-sha1", is_flag=True,
              help="Accept SHA-1 (signature, digest, certificate chain) from any sender; without it, only "
                   "agencies whose directory entry sets legacy_sha1.")
@click.option("--no-crl", is_flag=True, help="Do not require a current CRL (diagnostics only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(file: str, trust_dir: str, topology_path: str, no_directory: bool, at_time: str | None,
           allow_sha1: bool, no_crl: bool, as_json: bool) -> None:
    """Verify FILE: schema, signature, chain to the trust store, revocation, signer = From."""
    at = None
    if at_time:
        try:
            at = datetime.fromisoformat(at_time)
        except ValueError:
            raise errors.UsageError(N_("--at {value!r} is not an ISO date/time"), value=at_time) from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    checked = check(read_file(file), trust=TrustStore.load(trust_dir, require_crl=not no_crl),
                    topology=None if no_directory else load_topology(settings(topology_path)),
                    policy=VerifyPolicy(allow_sha1=allow_sha1), at=at)
    _print(summary(checked), as_json, "VERIFIED")


@main.command("new-document")
@click.option("--from", "sender", required=True, help="Sender agency code.")
@click.option("--to", "recipients", required=True, multiple=True, help="Recipient agency code (repeat).")
@click.option("--subject", required=True, help="The document's subject (trích yếu).")
@click.option("--attach", "attachments", multiple=True, help="File to attach (repeat).")
@click.option("--document-id", default=None, help="The document's id (default: a new UUID).")
@click.option("--topology", "topology_path", default=None,
              help="The agency directory (default: as the settings find it).")
@click.option("-o", "--output", required=True, help="Where to write the document.")
def new_document(sender: str, recipients: tuple[str, ...], subject: str, attachments: tuple[str, ...],
                 document_id: str | None, topology_path: str, output: str) -> None:
    """Write a new, unsigned edXML document (names taken from the agency directory)."""
    topo = load_topology(settings(topology_path))

    def organ(code: str) -> Organ:
        return Organ(code, topo.agency(code).name)

    files = [(Path(a).name, mimetypes.guess_type(a)[0] or "application/octet-stream", read_file(a))
             for a in attachments]
    data = build_document(organ(sender), [organ(r) for r in recipients], subject=subject,
                          document_id=document_id, attachments=files)
    Path(output).write_bytes(data)
    click.echo(_("wrote {output}", output=output))

