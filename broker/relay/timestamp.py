"""RFC 3161 time-stamps on audit checkpoints, from a time-stamping authority (the Government CA
runs one; ``openssl ts`` can be a local one in tests).

A hub with ``settings.audit.tsa_url`` has each new checkpoint it signs time-stamped: the
authority signs the checkpoint's SHA-256 and the time, so the hub's own clock and key are not
the only witnesses of when its log stood where.

The request (:func:`query`) is built here: the SHA-256 imprint of the checkpoint token, a nonce
derived from the token (so that an auditor can build the same request years later and check the
nonce too), and a request for the authority's certificate.  An answer is kept only once it
verifies against that request (:func:`check`): granted, signed, for the same imprint and nonce, so
an error page or an answer to another request is refused.  The hub checks the signature with the
certificate the answer carries; ``audit verify-log --tsa-ca FILE`` checks it all again against
the authority's CA and prints the time it vouches for (kept in the answer itself).  Verification
uses Debian's ``openssl ts`` (no Python library of the TSP protocol is as well kept).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.core.cafiles import der, der_oid
from broker.core.errors import AuditFailure, TransientError
from broker.i18n import N_

SHA256 = "2.16.840.1.101.3.4.2.1"
MAX_ANSWER = 1_000_000


def _openssl(*args: str) -> bytes:
    done = subprocess.run(["openssl", *args], capture_output=True, timeout=30)
    if done.returncode != 0:
        raise AuditFailure(N_("openssl {command} {action}: {output}"), command=args[0], action=args[1],
                           output=done.stderr.decode(errors='replace').strip()[:300])
    return done.stdout


def nonce(data: bytes) -> int:
    """The nonce of the request about ``data``: 63 bits of SHA-256 over a label and the data."""
    return int.from_bytes(hashlib.sha256(b"lienthong time-stamp nonce\n" + data).digest()[:8], "big") >> 1


def query(data: bytes) -> bytes:
    """The TimeStampReq (DER) about ``data``: version 1, SHA-256 imprint, :func:`nonce`, certReq."""
    imprint = der(0x30, der(0x30, der_oid(SHA256) + der(0x05, b"")) + der(0x04, hashlib.sha256(data).digest()))
    n = nonce(data)
    return der(0x30, der(0x02, b"\x01") + imprint + der(0x02, n.to_bytes((n.bit_length() + 8) // 8, "big"))
               + der(0x01, b"\xff"))


def stamp(url: str, data: bytes, *, timeout: float = 10.0,
          opener: Callable[..., Any] = urllib.request.urlopen) -> bytes:
    """Ask the authority at ``url`` to time-stamp ``data``; return its answer (DER), once it
    verified against the request (:func:`check`)."""
    req = urllib.request.Request(url, data=query(data), method="POST",
                                 headers={"Content-Type": "application/timestamp-query"})
    try:
        with opener(req, timeout=timeout) as resp:
            answer = bytes(resp.read(MAX_ANSWER))
    except OSError as exc:
        raise TransientError(N_("time-stamping authority at {url} unreachable: {reason}"), url=url,
                             reason=exc) from None
    check(data, answer)
    return answer


def check(data: bytes, tsr: bytes, ca_file: Path | None = None) -> datetime:
    """That ``tsr`` is a granted answer to :func:`query` of ``data`` (imprint and nonce), signed by
    the authority's key; with ``ca_file``, by an authority whose certificate chains to it (else by
    the certificate the answer carries).  Returns the time it vouches for; raises
    :class:`AuditFailure` otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "tsq").write_bytes(query(data))
        (d / "tsr").write_bytes(tsr)
        if ca_file is None:  # the authority's own certificate, from its answer: signature, not chain
            _openssl("ts", "-reply", "-in", str(d / "tsr"), "-token_out", "-out", str(d / "token"))
            _openssl("pkcs7", "-inform", "DER", "-in", str(d / "token"), "-print_certs", "-out", str(d / "tsa.pem"))
            trust = ["-CAfile", str(d / "tsa.pem"), "-partial_chain"]
        else:
            trust = ["-CAfile", str(ca_file)]
        _openssl("ts", "-verify", "-queryfile", str(d / "tsq"), "-in", str(d / "tsr"), *trust)
        text = _openssl("ts", "-reply", "-in", str(d / "tsr"), "-text").decode(errors="replace")
    return stamped_time(text)


def verify(data: bytes, tsr: bytes, ca_file: Path) -> datetime:
    """``audit verify-log --tsa-ca``: :func:`check` against the authority's CA."""
    return check(data, tsr, ca_file)


def stamped_time(text: str) -> datetime:
    """The time in ``openssl ts -reply -text`` output."""
    for line in text.splitlines():
        if line.startswith("Time stamp:"):
            value = line.split(":", 1)[1].strip().replace(" GMT", "")
            return datetime.strptime(value, "%b %d %H:%M:%S.%f %Y" if "." in value else "%b %d %H:%M:%S %Y") \
                .replace(tzinfo=UTC)
    raise AuditFailure(N_("the time-stamp names no time"))
