"""How the national axis protocol authenticates a request, checked the way the axis does.

The client never sends its secret.  It lists the headers it signs (``XroadVnpt-sign-header-key``),
sends them as a JSON object (``XroadVnpt-sign-header``) and the lowercase hex HMAC-SHA256 of that
exact string keyed with the secret (``XroadVnpt-hash-header``).  :func:`authenticate` checks, in
this order: the caller names a known agency that has a secret; the HMAC over the raw string, in
constant time (the JSON's key order is not stable, so it is never re-serialized); each signed
value equals the header actually sent (a signed key whose header is absent is a stale key of an
earlier call and is ignored); ``systemid`` and ``timestamp`` are among the signed values; the
timestamp is inside the window.  A malformed value (a hash that is not hex, a signed set that is
not a JSON object, a timestamp that is no date) is refused like a wrong one (UNAUTHORIZED and its
kin), never an error of the server.  Refusing a replay needs a memory of what was served: the caller
asks :meth:`Authenticated.replay_key` and keeps it (``adapters.mailbox.Mailbox.first_use``).

Secrets: one file per agency (``<dir>/<code>.secret``), private from its creation;
``lienthong vxp secret AGENCY`` prints it, making it if needed, ``--rotate`` replaces it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from broker.core import errors
from broker.i18n import N_
from broker.private import write_private

PREFIX = "xroadvnpt-"
REQUIRED_SIGNED = ("systemid", "timestamp")
HMAC_HEX = re.compile(r"[0-9a-f]{64}")
TIMESTAMP = re.compile(r"^(\d{2})(\d{2})(\d{4})T(\d{2})(\d{2})(\d{2})\+(\d{1,4})$")
"""``ddMMyyyy'T'HHmmss+SSSS``: the ``+SSSS`` is milliseconds, not a zone."""


def hash_file(data: bytes) -> str:
    """SHA-256 of ``data`` as the SDK writes it: each byte in hex without zero padding."""
    return "".join(f"{b:x}" for b in hashlib.sha256(data).digest())


def parse_timestamp(text: str, zone: timezone) -> datetime:
    """A request timestamp, read in ``zone`` (the protocol's times carry no zone)."""
    m = TIMESTAMP.match(text.strip())
    if m is None:
        raise errors.UsageError(N_("the timestamp {text!r} is not ddMMyyyy'T'HHmmss+SSSS"), text=text)
    day, month, year, hour, minute, second, millis = (int(g) for g in m.groups())
    try:
        return datetime(year, month, day, hour, minute, second, min(millis, 999) * 1000, tzinfo=zone)
    except ValueError:
        raise errors.UsageError(N_("the timestamp {text!r} is not a real date and time"), text=text) from None


def zone_of(offset: str) -> timezone:
    """``+07:00`` -> a fixed zone."""
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", offset.strip())
    if m is None:
        raise errors.ConfigError(N_("utc_offset {offset!r} is not like +07:00"), offset=offset)
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return timezone(timedelta(minutes=minutes if m.group(1) == "+" else -minutes))


class SecretBook:
    """The agencies' shared secrets, one private file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, agency: str) -> Path:
        if not re.fullmatch(r"[0-9A-Za-z.\-]+", agency):
            raise errors.UsageError(N_("{agency!r} is not an agency code"), agency=agency)
        return self.directory / f"{agency}.secret"

    def secret(self, agency: str) -> bytes | None:
        try:
            return self._path(agency).read_bytes().strip()
        except (OSError, errors.UsageError):
            return None

    def ensure(self, agency: str) -> str:
        """The agency's secret, made now if it has none."""
        found = self.secret(agency)
        return found.decode() if found else self.rotate(agency)

    def rotate(self, agency: str) -> str:
        """A new secret for ``agency``; the old one stops working at once."""
        value = secrets.token_urlsafe(32)
        write_private(self._path(agency), value.encode() + b"\n")
        return value


@dataclass(frozen=True)
class Authenticated:
    """A request whose signature checked out: who sent it and the headers it carried."""

    agency: str
    headers: Mapping[str, str]
    """Every ``XroadVnpt-`` header sent, by lowercase key without the prefix."""
    signature: str
    at: datetime

    def get(self, key: str) -> str:
        return self.headers.get(key.lower(), "")

    def require(self, key: str) -> str:
        value = self.get(key).strip()
        if not value:
            raise errors.UsageError(N_("this call needs the header XroadVnpt-{key}"), key=key)
        return value

    def replay_key(self, operation: str, body: bytes) -> str:
        """What makes this request itself: its signature, the call, the parameters and the body.
        The same signed header set may serve several calls (the SDK fixes the timestamp when a
        service object is made and does not sign every parameter), so the key covers them all."""
        params = json.dumps(sorted(self.headers.items()), separators=(",", ":"))
        h = hashlib.sha256(f"{self.signature}\n{operation}\n{params}\n".encode())
        h.update(hashlib.sha256(body).digest())
        return h.hexdigest()


def authenticate(raw_headers: Mapping[str, bytes], *, book: SecretBook, agencies: Mapping[str, object],
                 now: datetime, window: float, zone: timezone) -> Authenticated:
    """Check a request's signed headers (``raw_headers``: lowercase names, raw values)."""
    sent = {k[len(PREFIX):]: v.decode("utf-8", "replace").strip()
            for k, v in raw_headers.items() if k.startswith(PREFIX)}
    agency = sent.get("systemid", "")
    if not agency:
        raise errors.Unauthorized(N_("send XroadVnpt-systemid (your agency code) and the signed headers"))
    if agency not in agencies:
        raise errors.Unauthorized(N_("systemid {agency!r} is not an agency of the directory"), agency=agency)
    key = book.secret(agency)
    if not key:
        raise errors.Unauthorized(N_("agency {agency!r} has no secret for this protocol yet (an operator makes one "
                                     "with 'lienthong vxp secret')"), agency=agency)
    signed_raw = raw_headers.get(PREFIX + "sign-header", b"")
    given = sent.get("hash-header", "").lower()
    if not signed_raw or not given:
        raise errors.Unauthorized(N_("send XroadVnpt-sign-header and XroadVnpt-hash-header"))
    if not HMAC_HEX.fullmatch(given):
        raise errors.Unauthorized(N_("hash-header is not an HMAC-SHA256 in hex (64 characters 0-9, a-f)"))
    expected = hmac.new(key, signed_raw.strip(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise errors.Unauthorized(N_("the signature of the headers (hash-header) does not verify with this agency's "
                                     "secret"))
    try:
        signed = json.loads(signed_raw)
    except ValueError:
        raise errors.HeaderMismatch(N_("sign-header is not a JSON object")) from None
    if not isinstance(signed, dict):
        raise errors.HeaderMismatch(N_("sign-header is not a JSON object"))
    values = {str(k).lower().removeprefix(PREFIX): str(v).strip() for k, v in signed.items()}
    for name in REQUIRED_SIGNED:
        if name not in values:
            raise errors.HeaderMismatch(N_("the signed headers must include {name}"), name=name)
    for name, value in values.items():
        if name in sent and sent[name] != value:
            raise errors.HeaderMismatch(N_("the signed {name} ({value!r}) is not the header sent ({sent!r})"),
                                        name=name, value=value, sent=sent[name])
    try:
        at = parse_timestamp(values["timestamp"], zone)
    except errors.UsageError as exc:
        raise errors.HeaderMismatch(exc.template, **exc.fields) from None
    skew = (now - at).total_seconds()
    if abs(skew) > window:
        raise errors.RequestStale(N_("the request's timestamp is {skew:.0f} s old; this server accepts {window:.0f} "
                                     "s either way (check the clock)") if skew > 0 else
                                  N_("the request's timestamp is {skew:.0f} s ahead; this server accepts {window:.0f} "
                                     "s either way (check the clock)"), skew=abs(skew), window=window)
    return Authenticated(agency, sent, given, at)
