"""Evidence bundles: one document's signed messages and everything recorded about them, checked
offline with no broker and no database.

:func:`export_bundle` writes a folder: the signed messages (``messages/<sha256>.edxml``), every
hop record and receipt the hubs logged about the document, the hub and agency certificates, the
trust anchors and CRLs, the agency directory, and ``manifest.json`` (each file's SHA-256).

:func:`verify_bundle` believes nothing the bundle says about itself.  The manifest only lists
files; the document id, sender and recipients are read from the signed messages.  Trust comes
from the auditor's own anchors and directory.  Every hop record must be signed by a hub whose
certificate the auditor trusts, speak of the bytes of a bundled message and of that message's
document, and sit in a trace: chained by ``prev`` back to a first record at the sender's own hub,
along a path of the directory's hub tree.  "Delivered to" names only recipients of the signed
message whose own hub's record, at the end of such a trace, put the message into their inbox.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from broker.core import receipts, wire
from broker.core.cafiles import SUFFIXES, read_directory
from broker.core.edxml import Message
from broker.core.errors import AuditFailure, LienthongError, TraceInvalid
from broker.core.hoprecords import HopRecord, check_path, parse_record, parse_time, token_digest, verify_record
from broker.core.outcome import Verdict
from broker.core.parsing import parse
from broker.core.topology import Topology, subject_uid
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.i18n import N_
from broker.ops.audit import Trail
from broker.relay.store import SqlStore
from broker.settings import PkiLayout


def export_bundle(trail: Trail, stores: Sequence[SqlStore], pki: Path, topology: Topology, out: Path,
                  topology_file: Path | None = None) -> Path:
    """Write the evidence bundle of ``trail`` into the new folder ``out``."""
    if not trail.rows:
        raise AuditFailure(N_("nothing is recorded about document {document_id!r}"), document_id=trail.document_id)
    out.mkdir(parents=True, exist_ok=False)
    files: dict[str, bytes] = {}
    for digest in sorted(trail.digests()):
        data = next((d for s in stores if (d := s.message(digest)) is not None), None)
        if data is not None:
            files[f"messages/{digest}.edxml"] = data
    for row in trail.rows:
        name = f"{row.kind}s/{row.hub}-{row.seq:08d}"
        files[name + (".xml" if row.kind == "receipt" else ".json")] = row.body.encode()
    for f in sorted(pki.iterdir()):
        if f.is_file() and f.suffix.lower() in SUFFIXES:  # the CA files as the trust store reads them
            files[f"trust/{f.name}"] = f.read_bytes()
    for hub in topology.hubs:
        files[f"hubs/{hub}.pem"] = PkiLayout(pki).hub(hub)[1].read_bytes()
    if topology_file is not None:  # the agency directory: binds each signer to its agency code
        files["directory.yaml"] = topology_file.read_bytes()
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    manifest = {"document_id": trail.document_id, "created": datetime.now(UTC).isoformat(),
                "files": {rel: wire.message_id(data) for rel, data in sorted(files.items())}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


@dataclass
class BundleReport:
    document_id: str
    """Read from the signed message(s), never from the manifest."""
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    messages: int = 0
    hop_records: int = 0
    receipts: int = 0
    hubs: list[str] = field(default_factory=list)
    delivered_to: list[str] = field(default_factory=list)


def _files(folder: Path, sub: str, pattern: str) -> list[Path]:
    return sorted((folder / sub).glob(pattern)) if (folder / sub).is_dir() else []


def _checked_files(folder: Path) -> dict[str, object]:
    """The manifest, once every file of the folder is listed in it with its SHA-256."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        listed = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditFailure(N_("manifest.json is missing or unreadable: {reason}"), reason=exc) from None
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        raise AuditFailure(N_("bundle files differ from the manifest: extra {extra}, missing {missing}"), extra=extra,
                           missing=missing)
    for rel, digest in listed.items():
        if wire.message_id((folder / rel).read_bytes()) != digest:
            raise AuditFailure(N_("{file} was altered (SHA-256 differs from the manifest)"), file=rel)
    return dict(manifest)


def verify_bundle(folder: Path, *, trust: TrustStore, directory: Topology, at: datetime | None = None) -> BundleReport:
    """Verify a bundle offline against the auditor's own ``trust`` anchors (and CRLs) and agency
    ``directory``; raise :class:`AuditFailure` naming the fault.  What the bundle ships (its
    ``trust/`` folder, hub certificates, a directory) is only material: intermediates and CRLs to
    build and check paths with, never an anchor, never the directory that binds signers."""
    manifest = _checked_files(folder)
    _shipped_roots, shipped_intermediates, shipped_crls = (read_directory(folder / "trust")
                                                           if (folder / "trust").is_dir() else ([], [], []))
    trust = trust.with_material(shipped_intermediates, shipped_crls)  # a root shipped with the evidence proves nothing
    hub_certs = _hub_certificates(folder, trust, at)
    tokens: dict[str, tuple[str, HopRecord]] = {}  # file name -> (token, record), each signature checked
    for p in _files(folder, "hops", "*.json"):
        token = p.read_text(encoding="utf-8")
        try:
            rec = parse_record(token)
            if rec.hub not in hub_certs:
                raise AuditFailure(N_("{file}: record of unknown hub {hub!r}"), file=p.name, hub=rec.hub)
            verify_record(token, hub_certs[rec.hub])
        except TraceInvalid as exc:
            raise AuditFailure(N_("{file}: {reason}"), file=p.name, reason=exc) from None
        tokens[p.name] = (token, rec)
    messages: dict[str, Message] = {}
    for p in _files(folder, "messages", "*.edxml"):
        data = p.read_bytes()
        if wire.message_id(data) != p.stem:
            raise AuditFailure(N_("{file}: the message bytes do not match their digest"), file=p.name)
        first = min((r.at for _t, r in tokens.values() if r.digest == p.stem), default=None)
        when = at or (parse_time(first) if first else None)
        try:
            messages[p.stem] = check(data, trust=trust, at=when, topology=directory).message
        except LienthongError as exc:
            raise AuditFailure(N_("{file}: the sender's signature does not verify: {error:line}"), file=p.name,
                               error=exc) from None
    if not messages:
        raise AuditFailure(N_("the bundle holds no signed message"))
    report = _about(messages, str(manifest.get("document_id", "")))
    report.messages = len(messages)
    for digest, message in messages.items():
        mine = {name: tr for name, tr in tokens.items() if tr[1].digest == digest}
        report.delivered_to += _trace_delivered(mine, message, directory)
    stray = sorted(name for name, (_t, rec) in tokens.items() if rec.digest not in messages)
    if stray:
        raise AuditFailure(N_("{file}: the hop record speaks of bytes that are not in the bundle"), file=stray[0])
    report.hop_records = len(tokens)
    report.hubs = list(dict.fromkeys(rec.hub for _t, rec in sorted(tokens.values(), key=lambda tr: tr[1].at)))
    report.delivered_to = sorted(set(report.delivered_to))
    report.receipts = _check_receipts(folder, trust, set(messages), at)
    return report


def _hub_certificates(folder: Path, trust: TrustStore, at: datetime | None) -> dict[str, x509.Certificate]:
    certs = {p.stem: x509.load_pem_x509_certificate(p.read_bytes()) for p in _files(folder, "hubs", "*.pem")}
    for hub, cert in certs.items():
        if subject_uid(cert) != f"hub:{hub}":
            raise AuditFailure(N_("hubs/{hub}.pem is not the certificate of hub {hub!r}"), hub=hub)
        try:
            trust.validate(cert, at=at)
        except LienthongError as exc:
            raise AuditFailure(N_("hubs/{hub}.pem is not a hub certificate you trust: {error:line}"), hub=hub,
                               error=exc) from None
    return certs


def _about(messages: dict[str, Message], claimed: str) -> BundleReport:
    """What the signed messages say the bundle is about: one document (statuses answer it)."""
    ids = {m.document_id for m in messages.values()}
    if len(ids) != 1:
        raise AuditFailure(N_("the signed messages speak of several documents: {ids}"), ids=sorted(ids))
    document_id = ids.pop()
    if claimed and claimed != document_id:
        raise AuditFailure(N_("the manifest says document {claimed!r}; the signed message says {document_id!r}"),
                           claimed=claimed, document_id=document_id)
    documents = [m for m in messages.values() if m.kind == "document"] or list(messages.values())
    return BundleReport(document_id, sender=documents[0].sender.organ_id,
                        recipients=sorted({r for m in documents for r in m.recipient_ids}))


def _trace_delivered(records: dict[str, tuple[str, HopRecord]], message: Message, directory: Topology) -> list[str]:
    """Check the records of one message as traces (see the module's docstring); return the
    recipients whose inbox a record at the end of a valid trace put it in."""
    by_token = {token_digest(token): rec for token, rec in records.values()}
    first_hub = directory.agency(message.sender.organ_id).hub
    delivered: list[str] = []
    for name, (_token, rec) in sorted(records.items()):
        if rec.document_id != message.document_id:
            raise AuditFailure(N_("{file}: the hop record names document {recorded!r}, the signed message {signed!r}"),
                               file=name, recorded=rec.document_id, signed=message.document_id)
        if rec.verdict == Verdict.REJECTED:  # a refusal stands alone: it forwards nothing and delivers nothing
            continue
        chain = [rec]
        while chain[0].prev:
            before = by_token.get(chain[0].prev)
            if before is None or before in chain:
                raise AuditFailure(N_("{file}: the hop record follows a record that is not in the bundle"), file=name)
            chain.insert(0, before)
        try:
            if len(chain) == 1:
                if rec.hub != first_hub:
                    raise TraceInvalid(N_("the first hop is at {hub!r}, not at the sender's hub {first_hub!r}"),
                                       hub=rec.hub, first_hub=first_hub)
                routed = set(message.recipient_ids)
            else:
                routed = set(check_path(chain[:-1], directory.neighbours, first_hub, rec.hub))
        except TraceInvalid as exc:
            raise AuditFailure(N_("{file}: the trace of this record is not a path from the sender: {reason}"),
                               file=name, reason=exc) from None
        if rec.verdict != Verdict.DELIVERED:
            continue
        inboxes = [t.partition(":")[2] for t in rec.targets if t.startswith("inbox:")]
        for agency in inboxes:
            if agency not in message.recipient_ids or agency not in routed or \
                    agency not in directory.agencies or directory.agencies[agency].hub != rec.hub:
                raise AuditFailure(N_("{file}: hub {hub} claims delivery to {agency!r}, which is not a recipient of "
                                      "the signed message at that hub"), file=name, hub=rec.hub, agency=agency)
        delivered += inboxes
    return delivered


def _check_receipts(folder: Path, trust: TrustStore, digests: set[str], at: datetime | None) -> int:
    count = 0
    for p in _files(folder, "receipts", "*.xml"):
        data = p.read_bytes()
        try:
            when = at or parse_time(receipts.read(parse(data)).time)
            verified = receipts.verify(data, trust, at=when)
        except (LienthongError, ValueError) as exc:
            why = exc.line() if isinstance(exc, LienthongError) else str(exc)
            raise AuditFailure(N_("{file}: the receipt does not verify: {why}"), file=p.name, why=why) from None
        if verified.receipt.document_sha256 not in digests:
            raise AuditFailure(N_("{file}: the receipt speaks of bytes that are not in the bundle"), file=p.name)
        count += 1
    return count
