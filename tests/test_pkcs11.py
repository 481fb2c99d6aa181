"""Keys that stay on a PKCS#11 token (Debian's softhsm2 here, an HSM or a USB token in service).

A token made for the module (its own SOFTHSM2_CONF and token directory) holds keys imported from
the dev PKI.  A document signed through the token verifies with lienthong's verifier and with
xmlsec1 (and is the very document the PEM key signs: RSA PKCS#1 v1.5 is deterministic); a hub
whose key sits on the token signs hop records and receipts; every way of getting the token wrong
is a CONFIG error with a sentence; and on the real broker a hub with ``key.pkcs11`` instead of
``key.pem`` relays a document end to end, and the folder drop signs with a token key.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509

from broker.core import errors, receipts, wire
from broker.core.edxml import Organ, build_document, read
from broker.core.hoprecords import verify_record
from broker.core.outcome import Inbound
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.core.verifier import verify_tree
from broker.pkcs11 import TokenECKey, TokenError, TokenRSAKey
from broker.private import write_private
from broker.relay.assemble import principal_key, signing_key
from broker.settings import PkiLayout
from tests import hops
from tests.relay import ROOT, Relay
from tests.xmlsec import document, xmlsec_verify

pytestmark = pytest.mark.pkcs11

MODULES = (Path("/usr/lib/softhsm/libsofthsm2.so"), Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"))
G22 = "000.00.00.G22"
PIN = "246810"


@dataclass(frozen=True)
class SoftHsm:
    """One initialized SoftHSM token, label ``lienthong``, and a private file with its user PIN."""

    module: Path
    pin_file: Path
    label: str = "lienthong"

    def add(self, key_pem: Path, label: str) -> None:
        """Import a PKCS#8 PEM key onto the token under ``label``."""
        key_id = hashlib.sha256(label.encode()).hexdigest()[:8]
        subprocess.run(["softhsm2-util", "--import", str(key_pem), "--token", self.label, "--label", label,
                        "--id", key_id, "--pin", PIN], check=True, capture_output=True)

    def uri(self, label: str, *, pin_file: Path | None = None, module: Path | None = None) -> str:
        return (f"pkcs11:token={self.label};object={quote(label)};type=private"
                f"?module-path={module or self.module}&pin-source=file:{pin_file or self.pin_file}")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A SoftHSM token of this module's own (SOFTHSM2_CONF set for this process and its children)."""
    module = next((m for m in MODULES if m.exists()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        if os.environ.get("CI"):
            pytest.fail("softhsm2 is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("softhsm2 is not installed")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    (d / "softhsm2.conf").write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n"
                                     "log.level = ERROR\n")
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(d / "softhsm2.conf")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "lienthong", "--pin", PIN,
                    "--so-pin", "13579111"], check=True, capture_output=True)
    write_private(d / "user.pin", PIN.encode() + b"\n")
    yield SoftHsm(module, d / "user.pin")
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


@pytest.fixture(scope="module")
def on_token(softhsm: SoftHsm, dev_pki: Path) -> dict[str, str]:
    """G22's RSA key and the national hub's ECDSA key, imported onto the token: label -> URI."""
    softhsm.add(dev_pki / "agencies" / G22 / "key.pem", "agency-G22")
    softhsm.add(dev_pki / "hubs" / "national" / "key.pem", "hub-national")
    return {label: softhsm.uri(label) for label in ("agency-G22", "hub-national")}


def test_a_document_signed_on_the_token_verifies_here_and_with_xmlsec1(
        on_token: dict[str, str], dev_pki: Path, topology: Topology, tmp_path: Path) -> None:
    """`--key pkcs11:...` gives a key whose signatures the token makes: the document passes the
    full hub check, xmlsec1 verifies it against the root, and it is byte for byte the document
    the same key signs from its PEM file; the key cannot be exported."""
    if shutil.which("xmlsec1") is None:
        if os.environ.get("CI"):
            pytest.fail("xmlsec1 is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("xmlsec1 is not installed")
    cert = dev_pki / "agencies" / G22 / "cert.pem"
    token_key = signing_key(on_token["agency-G22"], cert)
    assert isinstance(token_key.key, TokenRSAKey)
    doc = document()
    signed = sign(doc, token_key)
    checked = check(signed, trust=TrustStore.load(dev_pki), topology=topology)
    assert checked.sender is not None and checked.sender.organ_id == G22
    result = xmlsec_verify(dev_pki, signed, tmp_path)
    assert result.returncode == 0, result.stderr
    assert signed == sign(doc, SigningKey.load(dev_pki / "agencies" / G22 / "key.pem", cert))
    with pytest.raises(TokenError):
        token_key.key.private_numbers()
    from cryptography.hazmat.primitives import serialization
    with pytest.raises(TokenError):
        token_key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())


def test_a_hub_key_on_the_token_signs_records_and_receipts(on_token: dict[str, str], dev_pki: Path,
                                                           topology: Topology, tmp_path: Path) -> None:
    """A hub directory with key.pkcs11 (the URI) and no key.pem signs with the token (ECDSA): the
    hop's record verifies with the hub's certificate, and so does the receipt it issues."""
    pki = tmp_path / "pki"
    shutil.copytree(dev_pki, pki)
    key_pem, cert_pem = PkiLayout(pki).hub("national")
    key_pem.unlink()
    PkiLayout.token_file(key_pem).write_text(on_token["hub-national"] + "\n")
    key = principal_key(PkiLayout(pki).hub("national"))
    assert isinstance(key.key, TokenECKey)
    hop = hops.hop(pki, topology, "national", key=key)
    trust = hop.trust
    body = sign(document(), SigningKey.load(*PkiLayout(pki).agency(G22)))
    entry = wire.agency_exchange(G22)
    outcome = hop.process(Inbound(body, wire.trusted_headers(entry, {wire.H_KIND: "edxml"}), entry))
    assert outcome.verdict == "forwarded", outcome.reason
    hub_cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    assert verify_record(outcome.record, hub_cert).hub == "national"
    issued = [c.body for c in outcome.copies if c.headers.get(wire.H_KIND) == "receipt"]
    verified = [receipts.verify(r, trust) for r in issued]
    assert [(v.receipt.kind, v.signature.signer) for v in verified] == [("accepted", hub_cert)]


def _config_error(uri: str, cert: Path) -> str:
    with pytest.raises(errors.ConfigError) as info:
        signing_key(uri, cert)
    return info.value.message


def test_getting_the_token_wrong_is_a_config_error(softhsm: SoftHsm, on_token: dict[str, str], dev_pki: Path,
                                                   tmp_path: Path) -> None:
    """A module that is not there, a key the token does not hold, a PIN file others can read, a
    PIN in the URI, a URI naming no key, a token key that is not the certificate's: each a CONFIG
    error with a sentence saying which."""
    cert = dev_pki / "agencies" / G22 / "cert.pem"
    assert "does not exist" in _config_error(softhsm.uri("agency-G22", module=tmp_path / "nope.so"), cert)
    assert "holds no private key with label 'agency-G99'" in _config_error(softhsm.uri("agency-G99"), cert)
    loose = tmp_path / "loose.pin"
    loose.write_text(PIN)
    loose.chmod(0o644)
    assert "readable by others" in _config_error(softhsm.uri("agency-G22", pin_file=loose), cert)
    assert "pin-value" in _config_error(on_token["agency-G22"] + f"&pin-value={PIN}", cert)
    assert "names no key" in _config_error(f"pkcs11:token=lienthong?module-path={softhsm.module}", cert)
    other = dev_pki / "agencies" / "000.00.00.G17" / "cert.pem"
    assert "does not belong to the certificate" in _config_error(on_token["agency-G22"], other)
    wrong = tmp_path / "wrong.pin"
    write_private(wrong, b"999999")
    assert "wrong PIN" in _config_error(softhsm.uri("agency-G22", pin_file=wrong), cert)


def test_the_cli_signs_on_the_token_and_says_when_the_pin_is_wrong(softhsm: SoftHsm, on_token: dict[str, str],
                                                                   dev_pki: Path, tmp_path: Path) -> None:
    """`lienthong sign --key pkcs11:...` in a process of its own: signs (the result verifies), and
    with a wrong PIN prints one CONFIG line saying so and exits 2, no traceback."""
    cert = dev_pki / "agencies" / G22 / "cert.pem"
    (tmp_path / "doc.edxml").write_bytes(document())

    def run(key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "broker.cli", "sign", str(tmp_path / "doc.edxml"), "--key", key,
                               "--cert", str(cert), "-o", str(tmp_path / "signed.edxml")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    done = run(on_token["agency-G22"])
    assert done.returncode == 0, done.stderr
    verify_tree(parse((tmp_path / "signed.edxml").read_bytes()), TrustStore.load(dev_pki))
    wrong = tmp_path / "wrong.pin"
    write_private(wrong, b"123123")
    refused = run(softhsm.uri("agency-G22", pin_file=wrong))
    assert refused.returncode == 2
    assert refused.stderr.strip() == "ERROR CONFIG: the PIN is not the user PIN of token 'lienthong' (wrong PIN)"


# --- on the real broker ---------------------------------------------------------------------------

A, NATIONAL_AGENCY, NEIGHBOUR = "000.00.51.H41", G22, "000.00.52.H41"


@pytest.fixture(scope="module")
def relay(rabbitmq_urls: tuple[str, str], softhsm: SoftHsm,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A whole relay whose hub H41 signs with a key on the token: its key.pem moved onto the
    token (and deleted) and key.pkcs11 written before its worker starts again."""
    r = Relay(tmp_path_factory.mktemp("pkcs11-relay"), *rabbitmq_urls)
    try:
        key_pem, _ = r.settings.keys.hub("H41")
        softhsm.add(key_pem, f"hub-H41-{r.namespace}")
        r.stop_workers("H41")
        key_pem.unlink()
        PkiLayout.token_file(key_pem).write_text(softhsm.uri(f"hub-H41-{r.namespace}") + "\n")
        r.start_worker("H41")
        yield r
    finally:
        r.close()


@pytest.mark.broker
def test_a_hub_on_the_token_relays_end_to_end(relay: Relay) -> None:
    """A commune of Nghệ An sends to the Government Office: hub H41 (key on the token) accepts it,
    signs the hop record the national hub checks before forwarding, and the recipient takes it
    with a trace whose first record verifies with H41's certificate; H41's accepted receipt too."""
    assert not relay.settings.keys.hub("H41")[0].exists()
    doc = relay.document(A, [NATIONAL_AGENCY], subject="ký trên thiết bị")
    client = relay.client(A)
    got = client.follow(client.send(doc), kinds=("accepted",))
    assert got["accepted"].hub == "H41"
    items = relay.take(NATIONAL_AGENCY, 1, accept=lambda i: i.body == doc)
    assert [i.body for i in items] == [doc]
    h41 = x509.load_pem_x509_certificate(relay.settings.keys.hub("H41")[1].read_bytes())
    first = verify_record(items[0].trace[0], h41)
    assert (first.hub, first.digest) == ("H41", wire.message_id(doc))
    assert [verify_record(t, x509.load_pem_x509_certificate(relay.settings.keys.hub(h)[1].read_bytes())).hub
            for t, h in zip(items[0].trace, ("H41", "national"), strict=True)] == ["H41", "national"]


@pytest.mark.broker
def test_the_folder_drop_signs_with_a_token_key(relay: Relay, softhsm: SoftHsm, tmp_path: Path) -> None:
    """`lienthong folder run A --key pkcs11:... --cert CERT`: the unsigned file dropped in the
    outbox is signed on the token and sent; the neighbour receives it, signed by A's certificate,
    and it passes the full check."""
    key_pem, cert_pem = relay.settings.keys.agency(A)
    softhsm.add(key_pem, f"agency-A-{relay.namespace}")
    root = tmp_path / "dms"
    (root / "outbox").mkdir(parents=True)
    data = build_document(Organ(A, "UBND xã Hưng Nguyên"), [Organ(NEIGHBOUR, "UBND xã Nam Đàn")],
                          subject="thư mục, khoá trên thiết bị", document_id="token-folder-1")
    (root / "outbox" / "cv.edxml").write_bytes(data)
    done = relay.cli("folder", "run", A, "--root", str(root), "--key", softhsm.uri(f"agency-A-{relay.namespace}"),
                     "--cert", str(cert_pem), "--once")
    assert done.returncode == 0, done.stderr
    assert "sent 1, failed 0" in done.stdout
    got = relay.take(NEIGHBOUR, 1, accept=lambda i: i.kind == "edxml" and b"token-folder-1" in i.body)
    assert len(got) == 1
    checked = check(got[0].body, trust=TrustStore.load(relay.settings.pki), topology=relay.topology)
    assert checked.signature is not None
    assert checked.signature.signer == x509.load_pem_x509_certificate(cert_pem.read_bytes())
    assert read(parse(got[0].body)).document_id == "token-folder-1"


# --- PIN files, modules, and a PIN the token refuses ---------------------------------------------


def test_a_pin_file_that_is_a_link_or_another_users_is_refused(softhsm: SoftHsm, on_token: dict[str, str],
                                                               dev_pki: Path, tmp_path: Path) -> None:
    """The PIN is read only from a regular file of the user running lienthong: a symbolic link to
    the right PIN file (private, correct PIN) is refused, and so is a private copy that belongs to
    another user."""
    cert = dev_pki / "agencies" / G22 / "cert.pem"
    link = tmp_path / "link.pin"
    link.symlink_to(softhsm.pin_file)
    assert "is a symbolic link" in _config_error(softhsm.uri("agency-G22", pin_file=link), cert)
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    theirs = tmp_path / "theirs.pin"
    write_private(theirs, PIN.encode())
    os.chown(theirs, 65534, 65534)
    assert "belongs to user 65534" in _config_error(softhsm.uri("agency-G22", pin_file=theirs), cert)


def test_only_allowed_pkcs11_modules_are_loaded(softhsm: SoftHsm, on_token: dict[str, str], dev_pki: Path,
                                                 tmp_path: Path) -> None:
    """A library outside the allow-list is not loaded, even a genuine token module copied there
    (module-path used to load any library); nor one that others may write.  A deployment that
    lists the place (LIENTHONG_PKCS11_MODULES) signs with it: `lienthong sign` in a process of its own."""
    cert = dev_pki / "agencies" / G22 / "cert.pem"
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(softhsm.module.resolve(), lib / "token.so")
    uri = softhsm.uri("agency-G22", module=lib / "token.so")
    assert "is not among the allowed ones" in _config_error(uri, cert)
    (tmp_path / "doc.edxml").write_bytes(document())

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "broker.cli", "sign", str(tmp_path / "doc.edxml"), "--key", uri,
                               "--cert", str(cert), "-o", str(tmp_path / "signed.edxml")], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    refused = run({})
    assert refused.returncode == 2 and "is not among the allowed ones" in refused.stderr
    allowed = run({"LIENTHONG_PKCS11_MODULES": f"/usr/lib/*/softhsm/*.so:{lib}/*.so"})
    assert allowed.returncode == 0, allowed.stderr
    verify_tree(parse((tmp_path / "signed.edxml").read_bytes()), TrustStore.load(dev_pki))
    (lib / "token.so").chmod(0o666)
    loose = run({"LIENTHONG_PKCS11_MODULES": f"{lib}/*.so"})
    assert loose.returncode == 2 and "may be changed by others" in loose.stderr


def test_a_hub_worker_whose_pin_is_refused_is_not_started_again(softhsm: SoftHsm, on_token: dict[str, str],
                                                                dev_pki: Path, tmp_path: Path) -> None:
    """A hub key on the token with a wrong PIN: `hub run` says so and exits 78, before any broker
    connection; the supervisor of `lienthong up` does not start it again (each start would be one
    more wrong PIN, and a real token locks after a few; a worker that fails otherwise is started
    again, tests/test_start.py)."""
    from broker.relay.supervise import Supervisor

    pki = tmp_path / "pki"
    shutil.copytree(dev_pki, pki)
    key_pem, _ = PkiLayout(pki).hub("national")
    key_pem.unlink()
    wrong = tmp_path / "wrong.pin"
    write_private(wrong, b"000000")
    PkiLayout.token_file(key_pem).write_text(softhsm.uri("hub-national", pin_file=wrong) + "\n")
    env = {**os.environ, "LIENTHONG_PKI": str(pki), "LIENTHONG_DATA": str(tmp_path / "data"),
           "LIENTHONG_TOPOLOGY": str(ROOT / "config" / "topology.yaml"), "LIENTHONG_STATE_URL": str(tmp_path / "state")}
    started: list[subprocess.Popen[bytes]] = []

    def start(hub: str, _slot: int) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen([sys.executable, "-m", "broker.cli", "hub", "run", hub], cwd=ROOT, env=env,
                                        stderr=subprocess.PIPE))
        return started[-1]

    supervisor = Supervisor(start, [("national", 0)], stable_seconds=30, max_delay=1)
    deadline = time.monotonic() + 60
    while started[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started[0].returncode == 78
    assert started[0].stderr is not None
    assert started[0].stderr.read().decode().strip() == \
        "ERROR CONFIG: the PIN is not the user PIN of token 'lienthong' (wrong PIN)"
    for _ in range(15):  # three seconds: a worker that failed otherwise would be started again after one
        supervisor.poll()
        time.sleep(0.2)
    assert len(started) == 1 and supervisor.restarts == 0 and supervisor.refused == {"national"}
