"""The gateway's bearer tokens: one agency each, with an expiry, revocable and rotatable.

Only each token's SHA-256 is kept, in a YAML file private from its creation.  Every change
(issue, revoke, rotate) takes an exclusive lock on ``<file>.lock``, reads the file, and replaces it
whole: two issuers at once both keep their token.  The gateway re-reads the file when it changes,
so a revocation counts at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from broker.core import errors
from broker.i18n import N_
from broker.private import write_private

DEFAULT_DAYS = 90


@dataclass(frozen=True)
class Token:
    """What is kept of a token (never the token itself)."""

    id: str
    agency: str
    created: float
    expires: float
    revoked: float | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


class TokenBook:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._known: dict[str, Token] = {}

    # -- reading ----------------------------------------------------------------------------

    def _load(self) -> dict[str, Token]:
        raw: Any = yaml.safe_load(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        out = {}
        for digest, entry in (raw or {}).items():
            if isinstance(entry, str):  # an older file: agency only, no expiry; 'rotate' replaces it
                entry = {"id": digest[:12], "agency": entry, "created": 0.0, "expires": float("inf")}
            out[str(digest)] = Token(**entry)
        return out

    def known(self) -> dict[str, Token]:
        """Digest -> token, re-read when the file changes."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._seen:
            self._known, self._seen = self._load(), stamp
        return self._known

    def agency_of(self, token: str, now: float | None = None) -> str:
        """The agency ``token`` belongs to; :class:`errors.Unauthorized` with the reason otherwise."""
        entry = self.known().get(_digest(token))
        if entry is None:
            raise errors.Unauthorized(N_("the token is not valid"))
        if entry.revoked is not None:
            raise errors.Unauthorized(N_("the token {id} was revoked"), id=entry.id)
        if (now or time.time()) >= entry.expires:
            raise errors.Unauthorized(N_("the token {id} expired on {expires}"), id=entry.id,
                                      expires=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(entry.expires)))
        return entry.agency

    def all(self) -> list[Token]:
        return sorted(self.known().values(), key=lambda t: (t.agency, t.created))

    # -- changing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Token]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._load()
            yield entries
            write_private(self.path, yaml.safe_dump({d: asdict(t) for d, t in entries.items()},
                                                    sort_keys=True).encode())

    def issue(self, agency: str, days: float = DEFAULT_DAYS) -> tuple[Token, str]:
        """A new token for ``agency``, valid ``days``; returns what is kept and the token (shown once)."""
        if days <= 0:
            raise errors.UsageError(N_("a token must be valid for some time (--days > 0)"))
        token = secrets.token_urlsafe(32)
        now = time.time()
        entry = Token(secrets.token_hex(6), agency, now, now + days * 86400)
        with self._locked() as entries:
            entries[_digest(token)] = entry
        return entry, token

    def revoke(self, token_or_id: str) -> list[Token]:
        """Revoke a token, given itself or its id; returns what was revoked."""
        return self._revoke(lambda d, t: d == _digest(token_or_id) or t.id == token_or_id, token_or_id)

    def rotate(self, agency: str, days: float = DEFAULT_DAYS) -> tuple[Token, str, list[Token]]:
        """A new token for ``agency``; every other token of that agency is revoked."""
        entry, token = self.issue(agency, days)
        gone = self._revoke(lambda _d, t: t.agency == agency and t.id != entry.id, None)
        return entry, token, gone

    def _revoke(self, which: Callable[[str, Token], bool], named: str | None) -> list[Token]:
        now = time.time()
        done = []
        with self._locked() as entries:
            for digest, t in list(entries.items()):
                if t.revoked is None and which(digest, t):
                    entries[digest] = Token(t.id, t.agency, t.created, t.expires, now)
                    done.append(entries[digest])
        if named is not None and not done:
            raise errors.NotFound(N_("no such token (or it is already revoked)"))
        return done
