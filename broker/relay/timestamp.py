"""RFC 3161 time-stamps on audit checkpoints, from a time-stamping authority (the Government CA
runs one; ``openssl ts`` can be a local one in tests).

A hub with ``settings.audit.tsa_url`` has each new checkpoint it signs time-stamped: the
authority signs the checkpoint's SHA-256 and the time, so the hub's own clock and key are not
the only witnesses of when its log stood where.  ``audit verify-log --tsa-ca FILE`` checks each
stamp.  Requests and verification use Debian's ``openssl ts`` (no Python library of the TSP
protocol is as well kept).
"""

from __future__ import annotations

import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.core.errors import AuditFailure, TransientError


def _openssl(*args: str) -> bytes:
    done = subprocess.run(["openssl", "ts", *args], capture_output=True, timeout=30)
    if done.returncode != 0:
        raise AuditFailure(f"openssl ts {args[0]}: {done.stderr.decode(errors='replace').strip()[:300]}")
    return done.stdout


def stamp(url: str, data: bytes, *, timeout: float = 10.0,
          opener: Callable[..., Any] = urllib.request.urlopen) -> bytes:
    """Ask the authority at ``url`` to time-stamp ``data`` (its SHA-256); return its answer (DER)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").write_bytes(data)
        query = _openssl("-query", "-data", str(Path(tmp) / "data"), "-sha256", "-cert")
    req = urllib.request.Request(url, data=query, method="POST",
                                 headers={"Content-Type": "application/timestamp-query"})
    try:
        with opener(req, timeout=timeout) as resp:
            return bytes(resp.read(1_000_000))
    except OSError as exc:
        raise TransientError(f"time-stamping authority at {url} unreachable: {exc}") from None


def verify(data: bytes, tsr: bytes, ca_file: Path) -> datetime:
    """Check that ``tsr`` is a valid time-stamp of ``data`` by an authority chaining to ``ca_file``;
    return the time it vouches for.  Raises :class:`AuditFailure` otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").write_bytes(data)
        (Path(tmp) / "tsr").write_bytes(tsr)
        _openssl("-verify", "-data", str(Path(tmp) / "data"), "-in", str(Path(tmp) / "tsr"), "-CAfile", str(ca_file))
        text = _openssl("-reply", "-in", str(Path(tmp) / "tsr"), "-text").decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("Time stamp:"):
            return datetime.strptime(line.split(":", 1)[1].strip().replace(" GMT", ""),
                                     "%b %d %H:%M:%S.%f %Y" if "." in line else "%b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    raise AuditFailure("the time-stamp names no time")
