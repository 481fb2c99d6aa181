"""Folder drop for legacy systems: files in, files out, nothing lost or sent twice.

Layout under the root folder of one agency::

    outbox/   drop *.edxml here (write elsewhere, then rename in: only whole files are taken)
    work/     files being sent (a restart resumes from here)
    sent/     files the agency's hub has taken
    failed/   files refused, each with <name>.reason.txt ("CODE: sentence")
    inbox/    received documents and statuses (<message id>.edxml)
    receipts/ hub receipts (<message id>.receipt.xml)

A dropped file is moved (atomically, rename) into work/, signed there when a
key is given and it is not signed yet (the signed bytes are kept in work/ so a
restart resends the very same bytes), sent, then moved to sent/.  A crash
between send and move resends the same bytes, which the relay recognises as a
duplicate: the recipient still gets the document once.  A rejection receipt
for a sent file moves it to failed/ with the hub's reason.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from broker.core import errors, receipts, wire
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign
from broker.core.verifier import verify_tree
from broker.settings import Fault

from .localdb import LocalDB
from .sdk import AgencyClient, InboxItem, save_item

FOLDERS = ("outbox", "work", "sent", "failed", "inbox", "receipts")


@dataclass
class FolderStats:
    sent: int = 0
    failed: int = 0
    received: int = 0


class FolderAdapter:
    def __init__(self, client: AgencyClient, root: Path, key: SigningKey | None = None,
                 fault: Fault | None = None) -> None:
        self.client = client
        self.fault = fault or Fault()
        """Fault injection for the reliability tests (``folder-after-send``)."""
        self.root = root
        self.key = key
        self.stats = FolderStats()
        for name in FOLDERS:
            (root / name).mkdir(parents=True, exist_ok=True)
        self._index = LocalDB(root / ".sent-index.sqlite3",
                              ["CREATE TABLE IF NOT EXISTS sent (digest TEXT PRIMARY KEY, name TEXT)"])

    def dir(self, name: str) -> Path:
        return self.root / name

    # -- outgoing ---------------------------------------------------------------------------

    def claim_outbox(self) -> None:
        """Move whole files from outbox/ into work/ (rename is atomic on one filesystem)."""
        for f in sorted(self.dir("outbox").iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix in (".edxml", ".xml"):
                f.replace(self.dir("work") / f.name)

    def send_work(self) -> None:
        for f in sorted(self.dir("work").iterdir()):
            if not f.is_file() or f.name.endswith((".signed", ".part")):
                continue
            try:
                data = self._signed_bytes(f)
                message_id = self.client.send(data)
            except errors.TransientError:
                return  # broker away: keep the file in work/, try again next round
            except errors.LienthongError as exc:
                self._fail(f, exc.code, exc.message)
                continue
            with self._index.tx() as db:
                db.execute("INSERT OR REPLACE INTO sent VALUES (?, ?)", (message_id, f.name))
            self.fault.maybe_die("folder-after-send")
            f.replace(self.dir("sent") / f.name)
            f.with_name(f.name + ".signed").unlink(missing_ok=True)
            self.stats.sent += 1

    def _signed_bytes(self, f: Path) -> bytes:
        signed_copy = f.with_name(f.name + ".signed")
        if signed_copy.exists():
            return signed_copy.read_bytes()
        data = f.read_bytes()
        tree = parse(data)
        if self.key is None:
            return data
        try:
            verify_tree(tree, None)
            return data  # already signed (and intact): send as is
        except errors.SignatureMissing:
            pass
        signed = sign(data, self.key)
        tmp = f.with_name(f.name + ".signed.part")
        _write_synced(tmp, signed)
        tmp.replace(signed_copy)
        return signed

    def _fail(self, f: Path, code: str, message: str) -> None:
        target = self.dir("failed") / f.name
        _write_synced(target.with_name(f.name + ".reason.txt.part"), f"{code}: {message}\n".encode())
        target.with_name(f.name + ".reason.txt.part").replace(target.with_name(f.name + ".reason.txt"))
        f.replace(target)
        f.with_name(f.name + ".signed").unlink(missing_ok=True)
        self.stats.failed += 1

    # -- incoming ---------------------------------------------------------------------------

    def receive(self) -> None:
        def handle(item: InboxItem) -> None:
            if item.kind == wire.Kind.RECEIPT:
                save_item(self.dir("receipts"), item)
                r = receipts.read_bytes(item.body)
                if r.kind == "rejected":
                    self._rejected(r.document_sha256, r.code, r.reason)
            else:
                save_item(self.dir("inbox"), item)
                self.stats.received += 1

        self.client.fetch(handle, limit=200)

    def _rejected(self, digest: str, code: str, reason: str) -> None:
        rows = self._index.rows("SELECT name FROM sent WHERE digest = ?", (digest,))
        row = rows[0] if rows else None
        if row and (self.dir("sent") / row[0]).exists():
            self._fail(self.dir("sent") / row[0], code, reason)

    # -- loop -------------------------------------------------------------------------------

    def run_once(self) -> FolderStats:
        self.claim_outbox()
        self.send_work()
        self.receive()
        return self.stats

    def run(self, *, interval: float = 1.0, stop: float | None = None) -> None:
        deadline = None if stop is None else time.monotonic() + stop
        while deadline is None or time.monotonic() < deadline:
            try:
                self.run_once()
            except errors.TransientError:
                pass  # broker away: try again next round
            time.sleep(interval)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
