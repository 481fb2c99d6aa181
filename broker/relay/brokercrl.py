"""The transport CA's CRL: the broker accounts withdrawn, where RabbitMQ reads them.

RabbitMQ checks every client certificate against it at each TLS login (Erlang's ``crl_check``
with the hashed-directory CRL cache, configured by ``scripts/ensure-rabbitmq.sh``): the file is
``<transport CA>/crl/<hash>.r0``, ``<hash>`` the CA's OpenSSL name hash.  The broker reads that
file at every handshake, so a new CRL counts from the next login, with no restart and no cache to
clear.  Connections already open stay open until closed (``rabbitmqctl close_all_user_connections``).

Without a current CRL the broker refuses every certificate (it fails closed), so the CRL is
re-signed well before its ``nextUpdate``: ``lienthong pki broker-crl DIR --if-due``, which the
set-up script runs each time.  Writing is atomic (a new file renamed over the old one) and
serialized by a lock, so two revocations at once both count.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from broker.core.cafiles import name_hash
from broker.relay import devpki

DAYS = 30
"""How long a CRL is good for (its ``nextUpdate``)."""
RENEW_DAYS = 10
"""``--if-due`` re-signs when less than this is left."""


def crl_path(directory: Path, ca: x509.Certificate) -> Path:
    """Where the broker looks for the CRL of ``ca``, kept in the transport CA's ``directory``."""
    return directory / "crl" / f"{name_hash(ca.subject)}.r0"


def read(directory: Path) -> x509.CertificateRevocationList | None:
    """The current CRL of the transport CA in ``directory``, if one was written."""
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    try:
        return x509.load_pem_x509_crl(crl_path(directory, ca).read_bytes())
    except FileNotFoundError:
        return None


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert``."""
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def revoke(directory: Path, certs: Iterable[x509.Certificate]) -> tuple[Path, list[str]]:
    """Add ``certs`` (each issued by the transport CA in ``directory``) to its CRL, keeping what
    it revoked before with their dates; returns the CRL's path and the broker users revoked."""
    with _locked(directory):
        ca = devpki.transport_ca(directory)
        dates = _revoked(read(directory))
        users = []
        for cert in certs:
            dates.setdefault(cert.serial_number, datetime.now(UTC).replace(microsecond=0))
            users += [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return _write(directory, ca, dates), users


def renew(directory: Path, *, if_due: bool = False) -> Path | None:
    """Re-sign the CRL with what it revokes (made, empty, if there is none); with ``if_due`` only
    when it is missing or has less than :data:`RENEW_DAYS` left.  Returns its path, or None when
    nothing was due."""
    with _locked(directory):
        ca = devpki.transport_ca(directory)
        current = read(directory)
        due = current is None or current.next_update_utc is None or \
            current.next_update_utc - datetime.now(UTC) < timedelta(days=RENEW_DAYS)
        if if_due and not due:
            return None
        return _write(directory, ca, _revoked(current))


def _revoked(crl: x509.CertificateRevocationList | None) -> dict[int, datetime]:
    return {r.serial_number: r.revocation_date_utc for r in crl} if crl is not None else {}


def _write(directory: Path, ca: devpki.Issued, dates: dict[int, datetime]) -> Path:
    crl = devpki.make_crl(ca, dates, days=DAYS)
    path = crl_path(directory, ca.cert)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(crl.public_bytes(Encoding.PEM))
    tmp.chmod(0o644)  # public, and read by the broker's own user
    tmp.replace(path)
    return path


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    (directory / "crl").mkdir(parents=True, exist_ok=True)
    (directory / "crl").chmod(0o755)  # whatever the umask: the broker's own user reads it
    with open(directory / "crl" / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
