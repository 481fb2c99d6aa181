"""The audit log and evidence bundles: what auditors check, offline.

Each hub appends every hop record and receipt to its log (``broker.relay.store``).
Entry ``n`` stores ``hash = SHA-256(prev || canonical JSON of the entry)``,
``prev`` being entry ``n-1``'s hash: changing, removing or reordering any
entry breaks every hash after it.  Periodically the hub signs a checkpoint
``(hub, seq, hash, at)``, so truncation of the log before a checkpoint, or
rewriting it wholesale, is caught too.

An evidence bundle (:func:`export_bundle`) is a folder with the signed
document, its statuses, every hop record and receipt about it, the hub and
agency certificates, the trust anchors and CRLs, and a manifest of SHA-256
digests.  :func:`verify_bundle` checks all of it with no broker and no
database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from broker.core import receipts, wire
from broker.core.auditlog import AuditRow, entry_hash
from broker.core.cafiles import SUFFIXES, read_directory
from broker.core.errors import AuditFailure, LienthongError, TraceInvalid
from broker.core.hoprecords import HopRecord, parse_record, parse_time, verify_record
from broker.core.parsing import parse
from broker.core.topology import Topology, subject_uid
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.relay import timestamp
from broker.relay.store import SqlStore
from broker.settings import PkiLayout

# --- the log ---------------------------------------------------------------------------------


@dataclass
class LogReport:
    hub: str
    entries: int
    checkpoints: int
    broken_at: int | None = None
    reason: str = ""
    witnessed: int = 0
    """Checkpoints of this hub its neighbours witnessed (and that match)."""
    time_stamped: int = 0
    """Checkpoints whose time-stamp verified against the authority given."""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_log(rows: Sequence[AuditRow], checkpoints: Sequence[tuple[int, str, float, str]],
               hub: str, hub_certs: Mapping[str, x509.Certificate],
               witnesses: Sequence[AuditRow] = (), timestamps: Mapping[int, bytes] | None = None,
               tsa_ca: Path | None = None) -> LogReport:
    """Recompute the chain, check the hub's own signed checkpoints and what its neighbours
    witnessed (``witnesses``: their audit entries of kind ``witness``, about any hub); return the
    first broken entry, if any.  The hub's own checkpoints cannot show a log cut together with
    them, or rewritten and re-signed by the hub's operator; a neighbour's witness can.  With
    ``tsa_ca``, each RFC 3161 time-stamp of a checkpoint must verify against that authority."""
    hub_cert = hub_certs[hub]
    report = LogReport(hub, len(rows), len(checkpoints))
    prev, expected_seq = "", 1
    by_seq: dict[int, AuditRow] = {}
    for row in rows:
        if row.seq != expected_seq:
            report.broken_at, report.reason = expected_seq, f"entry {expected_seq} is missing"
            return report
        if row.prev != prev:
            report.broken_at, report.reason = row.seq, f"entry {row.seq} does not follow entry {row.seq - 1}"
            return report
        if entry_hash(row) != row.hash:
            report.broken_at, report.reason = row.seq, f"entry {row.seq} was altered (hash mismatch)"
            return report
        prev, expected_seq = row.hash, expected_seq + 1
        by_seq[row.seq] = row
    for seq, hash_, _at, token in checkpoints:
        try:
            rec = verify_record(token, hub_cert)
        except TraceInvalid:
            report.broken_at, report.reason = seq, f"checkpoint at entry {seq} is not signed by hub {hub}"
            return report
        if rec.digest != hash_ or rec.extra.get("seq") != str(seq):
            report.broken_at, report.reason = seq, f"checkpoint at entry {seq} was altered"
            return report
        head = by_seq.get(seq)
        if head is None:
            report.broken_at, report.reason = seq, f"the log was cut: checkpoint names entry {seq}, which is gone"
            return report
        if head.hash != hash_:
            report.broken_at, report.reason = seq, f"the log was rewritten before checkpoint {seq}"
            return report
    tokens = {seq: token for seq, _h, _a, token in checkpoints}
    for seq, tsr in sorted((timestamps or {}).items()):
        if tsa_ca is None:
            break
        try:
            timestamp.verify(tokens[seq].encode(), tsr, tsa_ca)
        except (KeyError, AuditFailure) as exc:
            why = "its checkpoint is gone" if isinstance(exc, KeyError) else exc.message
            report.broken_at, report.reason = seq, f"the time-stamp of checkpoint {seq} does not verify: {why}"
            return report
        report.time_stamped += 1
    for row in witnesses:
        seen = json.loads(row.body)
        counter = verify_record(seen["witness"], hub_certs[row.hub])  # the witness's own signature
        if counter.extra.get("of") != hub:
            continue
        rec = verify_record(seen["checkpoint"], hub_cert)
        seq = int(rec.extra["seq"])
        report.witnessed += 1
        mine = by_seq.get(seq)
        if mine is None:
            report.broken_at, report.reason = seq, (f"the log was cut: hub {row.hub} witnessed entry {seq} "
                                                    f"(checkpoint of {rec.at}), which is gone")
            return report
        if mine.hash != rec.digest:
            report.broken_at, report.reason = seq, (f"the log was rewritten: hub {row.hub} witnessed entry {seq} "
                                                    f"with another hash")
            return report
    return report


# --- evidence bundles -----------------------------------------------------------------------


@dataclass
class Trail:
    """Everything the hubs recorded about one document."""

    document_id: str
    rows: list[AuditRow] = field(default_factory=list)

    def hop_records(self) -> list[HopRecord]:
        return [parse_record(r.body) for r in self.rows if r.kind == "hop"]

    def digests(self) -> set[str]:
        return {r.digest for r in self.rows}


def collect(stores: Iterable[SqlStore], document_id: str) -> Trail:
    rows: list[AuditRow] = []
    seen: set[tuple[str, int]] = set()
    for store in stores:
        for row in store.audit_rows(document_id=document_id):
            if (row.hub, row.seq) not in seen:
                seen.add((row.hub, row.seq))
                rows.append(row)
    rows.sort(key=lambda r: (r.at, r.hub, r.seq))
    return Trail(document_id, rows)


def export_bundle(trail: Trail, stores: Sequence[SqlStore], pki: Path, topology: Topology, out: Path,
                  topology_file: Path | None = None) -> Path:
    """Write the evidence bundle of ``trail`` into the new folder ``out``."""
    if not trail.rows:
        raise AuditFailure(f"nothing is recorded about document {trail.document_id!r}")
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
    messages: int = 0
    hop_records: int = 0
    receipts: int = 0
    hubs: list[str] = field(default_factory=list)
    delivered_to: list[str] = field(default_factory=list)


def verify_bundle(folder: Path, *, trust: TrustStore, directory: Topology, at: datetime | None = None) -> BundleReport:
    """Verify a bundle offline against the auditor's own ``trust`` anchors (and CRLs) and agency
    ``directory``; raise :class:`AuditFailure` naming the fault.  What the bundle ships (its
    ``trust/`` folder, hub certificates, a directory) is only material: intermediates and CRLs to
    build and check paths with, never an anchor, never the directory that binds signers."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuditFailure(f"manifest.json is missing or unreadable: {exc}") from None
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    listed = set(manifest["files"])
    if present != listed:
        extra, missing = sorted(present - listed), sorted(listed - present)
        raise AuditFailure(f"bundle files differ from the manifest: extra {extra}, missing {missing}")
    for rel, digest in manifest["files"].items():
        if wire.message_id((folder / rel).read_bytes()) != digest:
            raise AuditFailure(f"{rel} was altered (SHA-256 differs from the manifest)")
    report = BundleReport(manifest["document_id"])
    shipped_cas, shipped_intermediates, shipped_crls = (read_directory(folder / "trust") if (folder / "trust").is_dir()
                                                        else ([], [], []))
    del shipped_cas  # a root that came with the evidence proves nothing
    trust = trust.with_material(shipped_intermediates, shipped_crls)
    hub_certs = {p.stem: x509.load_pem_x509_certificate(p.read_bytes()) for p in (folder / "hubs").glob("*.pem")}
    for hub, cert in hub_certs.items():
        if subject_uid(cert) != f"hub:{hub}":
            raise AuditFailure(f"hubs/{hub}.pem is not the certificate of hub {hub!r}")
        try:
            trust.validate(cert, at=at)
        except LienthongError as exc:
            raise AuditFailure(f"hubs/{hub}.pem is not a hub certificate you trust: {exc.line()}") from None
    records_by_digest: dict[str, list[HopRecord]] = {}
    for p in sorted((folder / "hops").glob("*.json")) if (folder / "hops").exists() else []:
        token = p.read_text(encoding="utf-8")
        rec = parse_record(token)
        if rec.hub not in hub_certs:
            raise AuditFailure(f"{p.name}: record of unknown hub {rec.hub!r}")
        try:
            verify_record(token, hub_certs[rec.hub])
        except TraceInvalid:
            raise AuditFailure(f"{p.name}: the hop record's signature does not verify") from None
        records_by_digest.setdefault(rec.digest, []).append(rec)
        report.hop_records += 1
        report.hubs.append(rec.hub)
        report.delivered_to += [t.partition(":")[2] for t in rec.targets if t.startswith("inbox:")] \
            if rec.verdict == "delivered" else []
    for p in sorted((folder / "messages").glob("*.edxml")) if (folder / "messages").exists() else []:
        data = p.read_bytes()
        if wire.message_id(data) != p.stem:
            raise AuditFailure(f"{p.name}: the message bytes do not match their digest")
        first = min((r.at for r in records_by_digest.get(p.stem, [])), default=None)
        when = at or (parse_time(first) if first else None)
        try:
            check(data, trust=trust, at=when, topology=directory)
        except LienthongError as exc:
            raise AuditFailure(f"{p.name}: the sender's signature does not verify: {exc.line()}") from None
        report.messages += 1
    digests = {p.stem for p in (folder / "messages").glob("*.edxml")} if (folder / "messages").exists() else set()
    for p in sorted((folder / "receipts").glob("*.xml")) if (folder / "receipts").exists() else []:
        data = p.read_bytes()
        try:
            when = at or parse_time(receipts.read(parse(data)).time)
            verified = receipts.verify(data, trust, at=when)
        except (LienthongError, ValueError) as exc:
            why = exc.line() if isinstance(exc, LienthongError) else str(exc)
            raise AuditFailure(f"{p.name}: the receipt does not verify: {why}") from None
        if verified.receipt.document_sha256 not in digests:
            raise AuditFailure(f"{p.name}: the receipt speaks of bytes that are not in the bundle")
        report.receipts += 1
    if report.messages == 0:
        raise AuditFailure("the bundle holds no signed message")
    return report


def verified_timeline(trail: Trail, hub_certs: dict[str, x509.Certificate], trust: TrustStore) -> list[dict[str, Any]]:
    """The trail as a timeline, each hop record's hub signature and each receipt verified (a bad
    one raises): hub, entry, time, kind, verdict, code, targets, digest."""
    out: list[dict[str, Any]] = []
    for row in trail.rows:
        if row.kind == "hop":
            rec = verify_record(row.body, hub_certs[row.hub])
            out.append({"hub": row.hub, "seq": row.seq, "at": rec.at, "kind": "hop", "verdict": rec.verdict,
                        "code": rec.code, "targets": list(rec.targets), "digest": rec.digest,
                        "message": rec.extra.get("kind", ""), "signature": "ok"})
        else:
            r = receipts.verify(row.body.encode(), trust).receipt
            out.append({"hub": row.hub, "seq": row.seq, "at": r.time, "kind": "receipt", "verdict": r.kind,
                        "code": r.code, "targets": [r.sender], "digest": r.document_sha256, "signature": "ok"})
    return out
