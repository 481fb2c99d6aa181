"""Steps 2-4 of the hop as one pure function: parse, schema, model, signature, signer binding.

Used by the CLI (``lienthong validate`` / ``verify``) and by every hub, so a
message is judged the same way everywhere.  No broker, no database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from lxml import etree

from broker.core import edxml, schema
from broker.core.parsing import DEFAULT_LIMITS, ParseLimits, parse
from broker.core.topology import Agency, Topology, check_signer
from broker.core.trust import TrustStore
from broker.core.verifier import DEFAULT_POLICY, VerifiedSignature, VerifyPolicy, verify_tree
from broker.core.wire import message_id


@dataclass(frozen=True)
class Checked:
    """A message that passed every check asked for."""

    message: edxml.Message
    sha256: str
    """SHA-256 of the exact bytes received (and signed): what receipts and hop records bind."""
    signature: VerifiedSignature | None = None
    sender: Agency | None = None
    tree: etree._ElementTree | None = None

    @property
    def legacy(self) -> tuple[str, ...]:
        """What was accepted only under the sender's SHA-1 policy (empty: nothing weak): the
        hub raises a ``sha1-accepted`` alert for it."""
        return self.signature.legacy if self.signature is not None else ()


When = Callable[[edxml.Message], datetime | None]
"""The instant to judge the signer's certificate at, given what the message says (read, not yet
verified): a later hub checks the trace against the sender the message names before it takes the
entry hub's time from it."""


def check(data: bytes, *, trust: TrustStore | None = None, topology: Topology | None = None,
          limits: ParseLimits = DEFAULT_LIMITS, policy: VerifyPolicy = DEFAULT_POLICY,
          at: datetime | When | None = None, require_signature: bool = True, digest: str | None = None) -> Checked:
    """Judge one message; raise a :class:`~broker.core.errors.RejectedInput` subclass on the first failure.

    ``trust`` set: the signature is verified and chained to the store.
    ``topology`` set: the signer must be bound to the ``From`` agency, and SHA-1 (signature,
    digest, certificates of the chain) is accepted only if the agency's entry sets ``legacy_sha1``.
    ``at``: when to judge the signer's certificate (None: now); a :data:`When` is asked once the
    message is read, before its signature is verified, and may refuse it.
    ``digest``: the bytes' SHA-256 (hex) when the caller has it already (a hub hashes them once).
    """
    tree = parse(data, limits)
    schema.validate(tree.getroot())
    message = edxml.read(tree)
    if callable(at):
        at = at(message)
    signature = None
    sender = None
    entry = topology.agencies.get(message.sender.organ_id) if topology is not None else None
    if entry is not None and entry.legacy_sha1 and not policy.allow_sha1:
        policy = replace(policy, allow_sha1=True)  # this sender's own policy, nobody else's
    if trust is not None or require_signature:
        signature = verify_tree(tree, trust, policy=policy, at=at)
    if topology is not None:
        sender = topology.agency(message.sender.organ_id)
        if signature is not None:
            check_signer(topology, message.sender.organ_id, signature.signer)
    return Checked(message=message, sha256=digest or message_id(data), signature=signature,
                   sender=sender, tree=tree)


def summary(checked: Checked) -> dict[str, Any]:
    """What a person or a script wants to know of a judged message (the CLI prints it)."""
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
        if checked.legacy:
            out["legacy_sha1"] = list(checked.legacy)
    return out

