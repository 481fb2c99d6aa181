"""Evidence bundles made by hand for the tests: hop-record traces signed with a PKI's hub keys,
and a folder with its manifest (what `audit export` writes, or what a forger would)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from broker.core.hoprecords import HopRecord, sign_record, token_digest, utc_now
from broker.core.signer import SigningKey
from broker.settings import PkiLayout

FAR_PATH = ("H41", "national", "H14", "H14-D31")
"""From a commune of Nghệ An to a commune of Cao Bằng."""


def trace(keys: PkiLayout, digest: str, document_id: str, to: str,
          path: tuple[str, ...] = FAR_PATH) -> list[str]:
    """The hop records of a document for ``to`` along ``path``, each signed by its hub's key in
    ``keys`` and chained by ``prev``; the last one puts it into ``to``'s inbox."""
    tokens: list[str] = []
    for hub, nxt in zip(path, (*path[1:], None), strict=True):
        target = f"hub:{nxt}" if nxt else f"inbox:{to}"
        tokens.append(sign_record(HopRecord(
            hub=hub, at=utc_now(), digest=digest, document_id=document_id,
            verdict="forwarded" if nxt else "delivered", targets=(target,), recipients=(to,),
            prev=token_digest(tokens[-1]) if tokens else "", extra={"routes": f"{target}={to}", "kind": "document"}),
            SigningKey.load(*keys.hub(hub))))
    return tokens


def write_bundle(folder: Path, files: dict[str, bytes], document_id: str) -> None:
    """Write ``files`` (relative path -> bytes) into ``folder`` with a manifest naming
    ``document_id`` and each file's SHA-256."""
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    manifest = {"document_id": document_id, "created": utc_now(),
                "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
