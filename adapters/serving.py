"""What the gateway's two protocols (REST under ``/v1``, the national axis' under ``/vxp``) share:
the directory, the mailbox, each agency's broker client, the message limit and the per-agency
count of uploads in progress; and request bodies read with a bound."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import Request

from broker.core import errors, wire
from broker.core.edxml import Message, read
from broker.core.parsing import ParseLimits, parse
from broker.core.topology import Topology
from broker.i18n import N_
from broker.settings import Settings

from .mailbox import Mailbox
from .sdk import AgencyClient, InboxItem


class Gateway:
    """What every route of the gateway shares: the directory, the mailbox, each agency's client,
    the message limit and the per-agency count of uploads in progress."""

    def __init__(self, settings: Settings, connect: Callable[[str], AgencyClient], *,
                 max_bytes: int | None = None, max_uploads: int = 4) -> None:
        self.settings = settings
        self.topology = Topology.load(settings.topology)
        self.limit = max_bytes or self.topology.settings.max_bytes
        self.max_uploads = max_uploads
        self.mailbox = Mailbox(settings.data_dir / "gateway.sqlite3")
        self._connect = connect
        self._clients: dict[str, AgencyClient] = {}
        self._clients_lock = threading.Lock()
        self._uploads: dict[str, int] = {}
        self._uploads_lock = threading.Lock()

    @property
    def limits(self) -> ParseLimits:
        return ParseLimits(max_bytes=self.limit, max_depth=self.topology.settings.max_depth)

    def client(self, agency: str) -> AgencyClient:
        """One client per agency and thread: pika connections must not be shared between threads."""
        key = f"{threading.get_ident()}:{agency}"
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = self._connect(agency)
            return self._clients[key]

    def pull(self, agency: str) -> None:
        """Take what waits in the agency's inbox into the mailbox (acked once stored)."""
        def keep(item: InboxItem) -> None:
            message = None if item.kind == wire.Kind.RECEIPT else read(parse(item.body, self.limits))
            self.mailbox.add_received(agency, item, message)

        self.client(agency).fetch(keep, limit=500)

    @contextmanager
    def upload(self, agency: str) -> Iterator[None]:
        """Count an upload of ``agency`` while it is in progress; refuse one over the limit."""
        with self._uploads_lock:
            if self._uploads.get(agency, 0) >= self.max_uploads:
                raise errors.TooManyUploads(N_("{agency} already has {max_uploads} uploads in progress; retry shortly"),
                                            agency=agency, max_uploads=self.max_uploads)
            self._uploads[agency] = self._uploads.get(agency, 0) + 1
        try:
            yield
        finally:
            with self._uploads_lock:
                self._uploads[agency] -= 1

    def read_own(self, agency: str, body: bytes) -> Message:
        """Read a message ``agency`` hands in (early, clear feedback; the hubs do the full checks)."""
        m = read(parse(body, self.limits))
        if m.sender.organ_id != agency:
            raise errors.SenderNotAllowed(N_("these credentials belong to {agency!r}, the message is from {sender!r}"),
                                          agency=agency, sender=m.sender.organ_id)
        return m

    def send(self, agency: str, body: bytes, message: Message) -> str:
        """Publish (waiting for the broker's confirm: call it off the event loop) and record it."""
        message_id = self.client(agency).send(body)
        self.mailbox.add_sent(agency, message_id, message)
        return message_id


async def bounded(request: Request, limit: int, too_large: type[errors.LienthongError], *,
                  drain: int = 0) -> bytes:
    """The request body, read as it streams and refused as soon as it passes ``limit`` bytes.

    ``drain``: before refusing, read and drop the rest of a body up to that many bytes in all, so
    a client that writes its whole body before it reads (the national axis' SDK does) gets the
    answer instead of a broken connection; a larger body is cut off."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        if declared <= drain:
            async for _ in request.stream():
                pass
        raise too_large(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # never more than the limit in memory
        size += len(chunk)
        if size > limit:
            if size > drain:
                break
            continue  # dropped: only read to the end
        chunks.append(chunk)
    if size > limit:
        raise too_large(f"the body exceeds the limit of {limit} bytes")
    return b"".join(chunks)
