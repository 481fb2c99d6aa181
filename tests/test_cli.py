"""The lienthong command as users run it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from broker.core.errors import codes as error_codes
from broker.core.errors import markdown as errors_markdown
from tests.samples import MALFORMED, sample_names, samples_dir

ROOT = Path(__file__).resolve().parents[1]
ERROR_LINE = re.compile(r"^ERROR [A-Z_]+: .+\n$")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def assert_error(result: subprocess.CompletedProcess[str], code: str, exit_code: int) -> None:
    assert result.returncode == exit_code, result.stderr
    assert ERROR_LINE.match(result.stderr), result.stderr
    assert result.stderr.startswith(f"ERROR {code}: ")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "pki"
    result = run("pki", "init", str(d))
    assert result.returncode == 0, result.stderr
    assert "DEVELOPMENT" in result.stderr
    return d


def test_pki_init_layout(pki: Path) -> None:
    """pki init writes the anchor, a CRL, and a key and certificate per agency and hub of the topology."""
    assert (pki / "root-ca.pem").exists() and (pki / "root-ca.crl.pem").exists()
    for organ in ("000.00.51.H41", "001.00.31.H14", "000.00.00.G22"):
        assert (pki / "agencies" / organ / "key.pem").exists()
        assert (pki / "agencies" / organ / "cert.pem").exists()
    assert (pki / "hubs" / "national" / "cert.pem").exists()
    assert (pki / "agencies" / "000.00.51.H41" / "key.pem").stat().st_mode & 0o077 == 0


def test_pki_init_with_ecdsa_agency_keys(tmp_path: Path) -> None:
    """`pki init --agency-keys ec` gives agencies ECDSA P-256 signing keys (for directories of
    thousands of agencies); a document signed with one verifies against that PKI."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path / "pki"
    assert run("pki", "init", str(d), "--agency-keys", "ec").returncode == 0
    key = d / "agencies" / "000.00.51.H41"
    assert isinstance(serialization.load_pem_private_key((key / "key.pem").read_bytes(), None),
                      ec.EllipticCurvePrivateKey)
    doc, signed = tmp_path / "doc.edxml", tmp_path / "signed.edxml"
    run("new-document", "--from", "000.00.51.H41", "--to", "001.00.31.H14", "--subject", "Thử", "-o", str(doc))
    assert run("sign", str(doc), "--key", str(key / "key.pem"), "--cert", str(key / "cert.pem"),
               "-o", str(signed)).returncode == 0
    result = run("verify", str(signed), "--trust", str(d))
    assert result.returncode == 0 and result.stdout.startswith("VERIFIED: document"), result.stderr


def test_a_long_agency_name_is_cut_in_the_certificate_not_the_code() -> None:
    """An agency's full name may be longer than a certificate's common name allows (64 bytes of
    UTF-8; Vietnamese letters take two or three): the dev PKI cuts the name there, on a character,
    and the code in the UID stays whole."""
    from cryptography.x509.oid import NameOID

    from broker.relay import devpki

    name = "Vụ Kế hoạch - Tài chính, Viện Hàn lâm Khoa học và Công nghệ Việt Nam"
    cert = devpki.issue(devpki.make_root(), name, uid="000.00.04.G21", kind="ec").cert
    cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    assert name.startswith(cn) and 60 <= len(cn.encode()) <= 64
    assert cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "000.00.04.G21"


def test_new_sign_verify(pki: Path, tmp_path: Path) -> None:
    """new-document, sign and verify chain together and exit 0."""
    doc, signed = tmp_path / "doc.edxml", tmp_path / "signed.edxml"
    assert run("new-document", "--from", "000.00.51.H41", "--to", "001.00.31.H14", "--subject", "Thử",
               "-o", str(doc)).returncode == 0
    key = pki / "agencies" / "000.00.51.H41"
    assert run("sign", str(doc), "--key", str(key / "key.pem"), "--cert", str(key / "cert.pem"),
               "-o", str(signed)).returncode == 0
    result = run("verify", str(signed), "--trust", str(pki))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VERIFIED: document")
    assert "UID=000.00.51.H41" in result.stdout


def test_verify_refusals(pki: Path, tmp_path: Path) -> None:
    """Unsigned: SIG_MISSING; one byte changed: SIG_DIGEST; both exit 1 with one line on stderr."""
    doc, signed = tmp_path / "doc.edxml", tmp_path / "signed.edxml"
    run("new-document", "--from", "000.00.51.H41", "--to", "001.00.31.H14", "--subject", "Gốc", "-o", str(doc))
    key = pki / "agencies" / "000.00.51.H41"
    run("sign", str(doc), "--key", str(key / "key.pem"), "--cert", str(key / "cert.pem"), "-o", str(signed))
    assert_error(run("verify", str(doc), "--trust", str(pki)), "SIG_MISSING", 1)
    signed.write_bytes(signed.read_bytes().replace("Gốc".encode(), "Gộc".encode()))
    assert_error(run("verify", str(signed), "--trust", str(pki)), "SIG_DIGEST", 1)


@pytest.mark.parametrize("name", sample_names())
def test_validate_samples(name: str) -> None:
    """Every well-formed sample of the national kit validates from the command line."""
    result = run("validate", str(samples_dir() / name))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VALID: ")


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_samples(name: str) -> None:
    """The kit's malformed samples: XML_MALFORMED, exit 1, one line, no traceback."""
    assert_error(run("validate", str(samples_dir() / name)), "XML_MALFORMED", 1)


def test_sample_placeholder_signature_is_not_a_signature(pki: Path) -> None:
    """The samples' Signature is not XMLDSig (no namespace): verify says SIG_MISSING, not a crash."""
    assert_error(run("verify", str(samples_dir() / "edoc_update.edxml"), "--trust", str(pki), "--no-directory"),
                 "SIG_MISSING", 1)


def test_missing_file_and_bad_config(tmp_path: Path) -> None:
    """A missing file is USAGE (exit 2); a trust store without anchors is CONFIG (exit 2)."""
    assert_error(run("validate", str(tmp_path / "nope.edxml")), "USAGE", 2)
    (tmp_path / "doc.edxml").write_bytes((samples_dir() / "status.edxml").read_bytes())
    assert_error(run("verify", str(tmp_path / "doc.edxml"), "--trust", str(tmp_path)), "CONFIG", 2)


def test_error_codes_documented() -> None:
    """`lienthong errors` lists every code of broker/errors.py, and docs/errors.md is up to date."""
    result = run("errors")
    assert result.returncode == 0
    codes = [c for c, _ in error_codes()]
    assert {line.split()[0] for line in result.stdout.splitlines()} == set(codes)
    page = run("errors", "--markdown").stdout
    assert page.startswith(errors_markdown())  # then the national axis protocol's ErrorCode table
    assert (ROOT / "docs" / "errors.md").read_text(encoding="utf-8") == page
