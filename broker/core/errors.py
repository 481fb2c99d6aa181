"""One rooted exception tree for lienthong.

Every error a user can cause carries a stable ``code`` (documented in
``docs/errors.md``) and a one-sentence message.  The CLI prints them as
``ERROR <CODE>: <sentence>``; hubs put the code into signed rejections.
Codes are part of the wire contract: never rename one, only add.

A sentence is written in English.  Marked for translation (``N_``) with its variable parts as
``{fields}`` given apart, it is shown in the reader's language where it is shown (``render``,
``line``), by the catalogue that place passes in:

    raise UsageError(N_("cannot read {path}: {reason}"), path=path, reason=exc.strerror)

A field may be another error (``reason=exc``): it reads as that error's sentence, ``{reason:line}``
as its ``ERROR <CODE>: ...`` line, in the same language as the sentence around it.

An unmarked sentence (an f-string) is shown as written, in English.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from broker.i18n import N_


class LienthongError(Exception):
    """Root of every error lienthong raises on purpose."""

    code = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None, **fields: object) -> None:
        super().__init__(message.format(**fields) if fields else message)
        self.template = message
        """The sentence as written in the source (with its ``{fields}``): the catalogues' msgid."""
        self.fields: dict[str, Any] = fields
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The sentence in English, its fields filled (logs, receipts, ``str()``)."""
        return str(self.args[0]) if self.args else self.code

    def render(self, gettext: Callable[[str], str] | None = None) -> str:
        """The sentence in a reader's language: the template through ``gettext`` (a catalogue's),
        then its fields filled (an error among them in the same language).  Without one, or for a
        sentence no catalogue knows, in English."""
        if gettext is None or not self.args:
            return self.message
        text = gettext(self.template)
        if not self.fields:
            return text
        return text.format(**{k: _Nested(v, gettext) if isinstance(v, LienthongError) else v
                              for k, v in self.fields.items()})

    def __format__(self, spec: str) -> str:
        """As a field of another error's sentence: ``{reason}`` its sentence, ``{reason:line}`` its line."""
        return self.line() if spec == "line" else format(self.message, spec)

    def line(self, gettext: Callable[[str], str] | None = None) -> str:
        """The one line shown to users: ``ERROR <CODE>: <sentence>`` (the code never translated)."""
        return f"ERROR {self.code}: {self.render(gettext)}"


class _Nested:
    """An error given as a field of another error's sentence, shown through the same catalogue."""

    def __init__(self, error: LienthongError, gettext: Callable[[str], str]) -> None:
        self.error, self.gettext = error, gettext

    def __format__(self, spec: str) -> str:
        return self.error.line(self.gettext) if spec == "line" else format(self.error.render(self.gettext), spec)


# --- input that is not acceptable edXML -----------------------------------


class RejectedInput(LienthongError, ValueError):
    """The message is refused for what it contains; retrying will not help."""

    code = "INPUT_REJECTED"
    about_bytes = True
    """The refusal follows from the bytes alone, so it stands for every later copy of them."""


class MalformedXML(RejectedInput):
    """The bytes are not well-formed XML."""

    code = "XML_MALFORMED"


class ForbiddenXML(RejectedInput):
    """The XML uses a construct the hardened parser refuses (DTD, entity, XInclude)."""

    code = "XML_FORBIDDEN"


class TooLarge(RejectedInput):
    """The message exceeds the configured size limit."""

    code = "XML_TOO_LARGE"


class TooDeep(RejectedInput):
    """The XML nests deeper than the configured limit."""

    code = "XML_TOO_DEEP"


class WrongNamespace(RejectedInput):
    """The root element is not edXML in the QCVN 102:2016 namespace."""

    code = "EDXML_NAMESPACE"


class SchemaViolation(RejectedInput):
    """The message does not conform to the edXML schema."""

    code = "EDXML_SCHEMA"


class ManifestMismatch(RejectedInput):
    """Manifest references and attachments do not correspond one to one."""

    code = "EDXML_MANIFEST"


# --- signatures and certificates -------------------------------------------


class SignatureError(RejectedInput):
    """The signature value does not verify with the signer's key."""

    code = "SIG_INVALID"


class SignatureMissing(SignatureError):
    """The message carries no XMLDSig signature."""

    code = "SIG_MISSING"


class SignatureProfile(SignatureError):
    """The signature does not follow the lienthong profile (wrapping, extra references...)."""

    code = "SIG_PROFILE"


class WeakAlgorithm(SignatureError):
    """The signature uses an algorithm refused by policy (unknown URIs; SHA-1 unless allowed for the sender)."""

    code = "SIG_ALGORITHM"


class DigestMismatch(SignatureError):
    """The signed content was altered after signing."""

    code = "SIG_DIGEST"


class CertificateError(SignatureError):
    """The signing certificate is not acceptable."""

    code = "CERT_INVALID"


class Untrusted(CertificateError):
    """The certificate does not chain to a configured trust anchor."""

    code = "CERT_UNTRUSTED"


class Expired(CertificateError):
    """A certificate in the chain is not valid at the time of verification."""

    code = "CERT_EXPIRED"


class Revoked(CertificateError):
    """A certificate in the chain is listed in its issuer's CRL."""

    code = "CERT_REVOKED"


class RevocationUnknown(CertificateError):
    """No current CRL from the issuer is in the trust store, so revocation cannot be checked."""

    code = "CRL_UNAVAILABLE"


class CertAlgorithm(CertificateError):
    """A certificate of the chain is signed with SHA-1: accepted only where the sender's entry sets legacy_sha1."""

    code = "CERT_ALGORITHM"


class KeyUsage(CertificateError):
    """The certificate is not allowed to sign documents (key usage)."""

    code = "CERT_USAGE"


class SignerMismatch(SignatureError):
    """The signer's certificate is not bound to the agency in ``From``."""

    code = "SIGNER_MISMATCH"


class UnknownAgency(RejectedInput):
    """The agency code is not in the agency directory."""

    code = "AGENCY_UNKNOWN"


class UnknownRecipient(RejectedInput):
    """A recipient agency is not in the agency directory."""

    code = "RECIPIENT_UNKNOWN"


class SenderNotAllowed(RejectedInput):
    """The message reached this hub from an account not entitled to send it."""

    code = "SENDER_NOT_ALLOWED"
    about_bytes = False  # the same bytes from the entitled account are judged afresh


class DocumentIdReused(RejectedInput):
    """Another message with the same sender, DocumentId and business type, but other bytes, was already accepted."""

    code = "DOCUMENT_ID_REUSED"


class StatusReused(RejectedInput):
    """Another status with the same sender, document answered and status code, but other bytes, was already accepted."""

    code = "STATUS_REUSED"


class TraceInvalid(RejectedInput):
    """A hop record carried with the message is missing, malformed or not signed by that hub."""

    code = "TRACE_INVALID"
    about_bytes = False  # the trace travels beside the signed bytes, in the AMQP headers


class HubRevoked(TraceInvalid):
    """A hop record or receipt is signed by a hub whose certificate is revoked or otherwise not valid now."""

    code = "HUB_REVOKED"


# --- transient problems: retried with back-off, then parked ------------------


class DirectoryRefused(RejectedInput):
    """A directory handed to a hub is not applied; the hub keeps serving on the one in force."""

    code = "DIRECTORY_REFUSED"


class DirectorySignature(DirectoryRefused):
    """The directory is not a signed directory, or its signature does not match its content."""

    code = "DIRECTORY_SIGNATURE"


class DirectorySigner(DirectoryRefused):
    """The directory's signer is not trusted, or not one of the directory authorities this hub names."""

    code = "DIRECTORY_SIGNER"


class DirectoryStale(DirectoryRefused):
    """The directory's version is not newer than the one in force at this hub."""

    code = "DIRECTORY_STALE"


class DirectoryInvalid(DirectoryRefused):
    """The directory fails the topology's checks (one root, no cycle, agencies on known hubs, hub certificates)."""

    code = "DIRECTORY_INVALID"


class DirectoryTooLarge(DirectoryRefused):
    """The directory is larger than a hub reads."""

    code = "DIRECTORY_TOO_LARGE"


class TransientError(LienthongError):
    """A dependency (broker, state store) failed; the operation may succeed later."""

    code = "TRANSIENT"


class RetriesExhausted(LienthongError):
    """A transient failure persisted through every retry tier; the message was parked."""

    code = "RETRY_EXHAUSTED"


class AccessRefused(LienthongError):
    """The broker refused this account access to that vhost, exchange or queue."""

    code = "ACCESS_REFUSED"


class AuditFailure(LienthongError):
    """The audit log, a receipt or an evidence bundle does not verify."""

    code = "AUDIT_BROKEN"


class AuditIncomplete(LienthongError):
    """The audit could not check all it must (a neighbour's witnesses, a time-stamp), so it is not a pass."""

    code = "AUDIT_INCOMPLETE"


class Unauthorized(LienthongError):
    """The request carries no valid token (none, unknown, expired or revoked) or client certificate."""

    code = "UNAUTHORIZED"


class NotFound(LienthongError):
    """No such message for this agency."""

    code = "NOT_FOUND"


class BodyTooLarge(LienthongError):
    """The request body exceeds what this route accepts."""

    code = "BODY_TOO_LARGE"


class TooManyUploads(LienthongError):
    """The agency already has as many uploads in progress as the gateway allows; retry shortly."""

    code = "TOO_MANY_UPLOADS"


class HostNotAllowed(LienthongError):
    """The request names a host this server does not serve (a DNS-rebinding attempt, or a proxy to configure)."""

    code = "HOST_NOT_ALLOWED"


# --- the national axis protocol (VXP): signed request headers ------------------


class RequestStale(Unauthorized):
    """The request's signed timestamp is outside the window the server accepts (clock skew, or an old request)."""

    code = "REQUEST_STALE"


class RequestReplayed(Unauthorized):
    """This signed request was already served once; a replay is refused."""

    code = "REQUEST_REPLAYED"


class HeaderMismatch(Unauthorized):
    """A signed header differs from the header sent, or a header the call needs is not signed."""

    code = "HEADER_MISMATCH"


class HashMismatch(LienthongError):
    """The body does not match the hash the client sent with it (hash-file)."""

    code = "HASH_MISMATCH"


class UnknownOperation(LienthongError):
    """The protocol has no operation of that name."""

    code = "OPERATION_UNKNOWN"


# --- local problems ----------------------------------------------------------


class UsageError(LienthongError):
    """A command was called with arguments that cannot work (missing file...)."""

    code = "USAGE"


class ConfigError(LienthongError):
    """Configuration (topology, trust store, keys) is missing or inconsistent."""

    code = "CONFIG"


class CredentialRefused(ConfigError):
    """A key's secret (a token's PIN) was refused: trying it again could lock the token."""


def markdown() -> str:
    """docs/errors.md: every code with its meaning."""
    lines = ["# Error codes", "",
             "Every refusal lienthong makes carries one of these codes, printed by the CLI as",
             "`ERROR <CODE>: <sentence>` and carried in signed rejections. Codes are stable:",
             "they are never renamed or reused, only added. `lienthong errors` prints this list",
             "(`lienthong errors --markdown > docs/errors.md` regenerates this file).", "",
             "CLI exit codes: 0 good; 1 message rejected; 2 usage, configuration, access or audit failure;",
             "70 internal error; 78 a hub worker whose token refused its PIN (`lienthong up` does not",
             "start it again: a token locks after a few wrong PINs).", "", "| code | meaning |", "|---|---|"]
    lines += [f"| `{c}` | {d} |" for c, d in codes()]
    return "\n".join(lines) + "\n"


INTERNAL_DOC = N_("An unexpected failure inside lienthong (a bug); details are in the log.")


def codes() -> list[tuple[str, str]]:
    """Every error code defined here, with its docstring."""
    seen: dict[str, str] = {}
    stack: list[type[LienthongError]] = [LienthongError]
    while stack:
        cls = stack.pop(0)
        doc = inspect.cleandoc(cls.__doc__ or "")
        seen.setdefault(cls.code, INTERNAL_DOC if cls is LienthongError else doc)
        stack.extend(cls.__subclasses__())
    return sorted(seen.items())
