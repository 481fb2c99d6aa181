"""Python SDK for agency systems: send documents, read the inbox, exactly once.

An :class:`AgencyClient` speaks AMQP with the agency's own account, which
may publish only to its hub's ingress and read only its own inbox::

    client = AgencyClient("000.00.51.H41", url, handed=HandedOver(path), check=DeliveryCheck(trust, topology, hubs))
    message_id = client.send(signed_bytes)
    receipts = client.follow(message_id)          # {"accepted": ..., "delivered": ...}
    client.fetch(lambda item: store_somewhere(item.body))   # acked once stored

An inbox message is known by the SHA-256 of its bytes, computed here: the AMQP ``message_id``
the hubs set to it is not trusted (a crafted one must not name a file, nor pass for another
message).  The client records what it handed over (:class:`~adapters.localdb.HandedOver`) by
that digest and drops a twin, so a redelivery never reaches the caller twice.  It needs only its broker URL (its own
account on its hub's vhost, ``docs/wire.md``), that store, and the trust store to check receipts
against: nothing of the relay's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters.localdb import HandedOver
from broker.core import receipts, wire
from broker.core.delivery import DeliveryCheck
from broker.core.errors import LienthongError, RejectedInput, TransientError, UsageError
from broker.core.signer import SigningKey
from broker.i18n import N_
from broker.logs import get_logger
from broker.relay.amqp import blocking
from broker.relay.transport import Received

log = get_logger("lienthong.sdk")


@dataclass(frozen=True)
class InboxItem:
    """One message taken from the inbox: a document, a status, or a hub receipt."""

    body: bytes
    message_id: str
    """The SHA-256 of ``body`` (hex): :meth:`of` computes it, whatever the delivery claimed."""
    kind: str
    headers: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, r: Received) -> InboxItem:
        return cls(r.body, wire.message_id(r.body), wire.kind_of(r.headers), r.headers)

    @property
    def trace(self) -> list[str]:
        return [str(t) for t in self.headers.get(wire.H_TRACE) or []]

    @property
    def issued(self) -> str | None:
        """A receipt's ``lt-issued``: its hub's signed record of it (checked before it is handed over)."""
        value = self.headers.get(wire.H_ISSUED)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None if value is None else str(value)


class AgencyClient:
    """One agency's connection to its hub: ``url`` carries the agency's own account and its hub's
    vhost (for a cluster, one URL per node separated by spaces)."""

    def __init__(self, organ_id: str, url: str, *, handed: HandedOver, check: DeliveryCheck,
                 key: SigningKey | None = None) -> None:
        self.organ_id = organ_id
        self.check = check
        """Run on every inbox message before it is handed over (``broker.core.delivery``)."""
        self.key = key
        """This agency's signing key, if the client may sign: refused documents are then answered
        with a signed status 02 (rejected) naming the code."""
        self.refused: list[tuple[InboxItem, RejectedInput]] = []
        """Inbox messages taken out and not handed over, with why."""
        self.url = url
        self.user = unquote(urlsplit(url.split()[0]).username or "")
        self.trust = check.trust
        self._publisher = blocking.Publisher(self.url)
        self._seen = handed
        self.twins = 0
        """Inbox copies dropped because their message id was already handed over."""

    def send(self, signed: bytes) -> str:
        """Publish a signed edXML message to the hub's ingress; returns its message id (SHA-256)."""
        if not signed:
            raise UsageError(N_("nothing to send"))
        message_id = wire.message_id(signed)
        self._publisher.publish(wire.agency_exchange(self.organ_id), "", signed, message_id=message_id,
                                user_id=self.user, headers={wire.H_KIND: wire.Kind.EDXML})
        return message_id

    def close(self) -> None:
        self._publisher.close()
        self._seen.close()

    def status_for(self, document: bytes, status_code: str, *, key: SigningKey, description: str = "",
                   name: str = "") -> bytes:
        """A signed edXML status from this agency about a received ``document``, signed with ``key``
        and naming this agency ``name`` (the directory's name; default: as the document names it)."""
        from broker.core import edxml
        from broker.core.parsing import parse
        from broker.core.signer import sign

        m = edxml.read(parse(document))
        named = next((r.name for r in m.recipients if r.organ_id == self.organ_id), "")
        status = edxml.build_status(edxml.Organ(self.organ_id, name or named),
                                    edxml.ResponseFor(m.sender.organ_id, m.document_id, m.code),
                                    status_code, description=description)
        return sign(status, key)

    def fetch(self, handle: Callable[[InboxItem], None], *, limit: int = 100, wait: float = 0.0) -> int:
        """Hand each new inbox message to ``handle``; ack it once ``handle`` returns.

        If ``handle`` raises, the message stays in the inbox (requeued) and the
        exception propagates after the batch.  Returns how many were handed over.
        """
        handed = 0
        error: BaseException | None = None

        def on(r: Received) -> bool:
            nonlocal handed, error
            if error is not None:
                return False
            item = InboxItem.of(r)
            key = f"{item.kind}:{item.message_id}"
            if self._seen.seen(self.organ_id, key):
                self.twins += 1
                return True  # a twin of something already handed over: drop it
            try:
                self.check(self.organ_id, item.kind, item.body, item.trace, item.issued)
            except RejectedInput as exc:
                self._refuse(item, exc)
                if exc.about_bytes:  # a refusal of what was sent: a later copy of these bytes is a twin
                    self._seen.mark(self.organ_id, key)
                return True  # taken out of the inbox, never handed over
            try:
                handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised below after requeueing
                error = exc
                return False
            # handled, then recorded, then acked: a crash in between re-hands the same
            # message id, which save_item() and idempotent handlers absorb
            self._seen.mark(self.organ_id, key)
            handed += 1
            return True

        for attempt in range(3):  # the broker may be restarting: a few tries before giving up
            try:
                blocking.fetch(self.url, wire.inbox_queue(self.organ_id), on, limit=limit, wait=wait)
                break
            except TransientError:
                if attempt == 2:
                    raise
                time.sleep(0.5 * 2 ** attempt)
        if error is not None:
            raise error
        return handed

    def _refuse(self, item: InboxItem, exc: RejectedInput) -> None:
        """A message the last hub should not have delivered: log it, keep it in ``refused``, and
        tell the sender with a signed status 02 when this client can sign and the message is a
        document it can read."""
        self.refused.append((item, exc))
        log.warning("inbox message refused", agency=self.organ_id, message_id=item.message_id, code=exc.code,
                    reason=exc.message)
        if self.key is None or item.kind != wire.Kind.EDXML:
            return
        try:
            self.send(self.status_for(item.body, "02", key=self.key, description=f"{exc.code}: {exc.message}"))
        except LienthongError as failed:  # unreadable, or not a document: nobody to answer
            log.info("no rejection status sent", message_id=item.message_id, why=failed.line())

    def follow(self, message_id: str, *, kinds: tuple[str, ...] = ("accepted", "delivered"),
               handle_other: Callable[[InboxItem], None] | None = None,
               timeout: float = 30.0) -> dict[str, receipts.Receipt]:
        """Wait for the hub receipts about a message this agency sent (``message_id`` from :meth:`send`).

        Each receipt is verified (hub signature, chain to the trust store, bound to those bytes).
        Returns what arrived by ``kind`` (``accepted``, ``delivered``, ``rejected``) once every kind
        asked for, or a rejection, arrived, or when ``timeout`` runs out.  Other inbox items go to
        ``handle_other`` (they stay in the inbox if it is None).
        """
        trust = self.trust.current()
        got: dict[str, receipts.Receipt] = {}

        def on(r: Received) -> bool:
            """True: taken (acked); False: left in the inbox (requeued after this batch)."""
            item = InboxItem.of(r)
            if item.kind == wire.Kind.RECEIPT:
                receipt = receipts.verify(item.body, trust).receipt
                if receipt.document_sha256 == message_id:
                    got[receipt.kind] = receipt
                    return True
            if handle_other is None:
                return False
            handle_other(item)
            return True

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and "rejected" not in got and not set(kinds) <= set(got):
            blocking.fetch(self.url, wire.inbox_queue(self.organ_id), on, limit=500, wait=0.5)
        return got

    def peek(self, *, limit: int = 100) -> list[InboxItem]:
        """List inbox messages without taking them (they are requeued)."""
        items: list[InboxItem] = []

        def on(r: Received) -> bool:
            items.append(InboxItem.of(r))
            return False

        blocking.fetch(self.url, wire.inbox_queue(self.organ_id), on, limit=limit)
        return items



def save_item(directory: Path, item: InboxItem) -> Path:
    """Write an inbox item atomically (temp file, fsync, rename) into ``directory``, named by the
    SHA-256 of its bytes, and return its path."""
    import os

    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".receipt.xml" if item.kind == wire.Kind.RECEIPT else ".edxml"
    path = directory / f"{wire.message_id(item.body)[:32]}{suffix}"
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "wb") as f:
        f.write(item.body)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path
