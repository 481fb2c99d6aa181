"""Trust in transit and least privilege, against the real broker: every connection is TLS, accounts
log in only with their client certificates, each host gets only its own secrets, and secret files
are private from their creation."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pika
import pytest
from cryptography import x509

from broker.core import errors, wire
from broker.core.topology import Topology
from broker.private import write_private
from broker.relay import devpki, layout
from broker.relay.amqp import blocking
from broker.relay.provision import Management, q
from broker.settings import PkiLayout
from tests.relay import ROOT, Relay

pytestmark = pytest.mark.broker

SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"


@pytest.fixture()
def relay(rabbitmq_urls: tuple[str, str], tmp_path: Path) -> Iterator[Relay]:
    r = Relay(tmp_path, *rabbitmq_urls, workers=0)
    yield r
    r.close()


def _connections(relay: Relay) -> list[dict]:
    vhosts = {relay.names.vhost(h) for h in relay.topology.hubs}
    return [c for c in Management(relay.settings.mgmt_url).get("/api/connections") or [] if c.get("vhost") in vhosts]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_every_connection_lienthong_up_makes_is_tls(relay: Relay, tmp_path: Path) -> None:
    """`lienthong up` runs every hub; a document crosses four hubs; every connection the broker
    lists in the relay's vhosts is TLS and logged in with a client certificate naming its user."""
    up = subprocess.Popen([sys.executable, "-m", "broker.cli", "up"], env=relay.env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        doc = relay.document(SENDER, [RECIPIENT])
        relay.client(SENDER).send(doc)
        assert [i.body for i in relay.take(RECIPIENT, 1, timeout=60)] == [doc]
        expected = {relay.names.hub_user(h) for h in relay.topology.hubs} | {
            relay.names.link_user(h) for h in relay.topology.hubs if relay.topology.neighbours(h)}
        deadline = time.monotonic() + 30  # the management API's connection list lags a few seconds
        conns: list[dict] = []
        while time.monotonic() < deadline:
            conns = _connections(relay)
            if expected <= {c["user"] for c in conns}:
                break
            time.sleep(1)
        assert expected <= {c["user"] for c in conns}, sorted(c["user"] for c in conns)
        admin = unquote(urlsplit(relay.settings.mgmt_url).username or "")
        for c in conns:
            assert c["ssl"] is True, c
            if c["user"] != admin:  # the admin (setup's declarations) logs in with its password, over TLS
                assert c["auth_mechanism"] == "EXTERNAL" and f"CN={c['user']}" in c["peer_cert_subject"], c
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)


def test_up_on_a_new_machine_issues_accounts_the_broker_trusts(relay: Relay) -> None:
    """`lienthong up --demo` with no PKI yet (the README's run command on a new machine) makes the
    dev PKI with the broker's own transport CA, so the broker accepts every account's certificate
    and the demonstration document arrives unchanged."""
    import shutil

    shutil.rmtree(relay.settings.pki)
    done = subprocess.run([sys.executable, "-m", "broker.cli", "up", "--demo", "--exit-after-demo"], env=relay.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created dev PKI" in done.stdout and "bytes unchanged: True" in done.stdout, done.stdout
    assert not (relay.settings.pki / "transport" / "ca.key").exists()  # no second transport CA was made
    broker_ca = x509.load_pem_x509_certificate(relay.settings.keys.broker_ca.read_bytes())
    for hub in relay.topology.hubs:  # signed by the CA the broker verifies client certificates with
        account = x509.load_pem_x509_certificate(relay.settings.keys.hub_account(hub, "hub")[1].read_bytes())
        account.verify_directly_issued_by(broker_ca)


def test_no_account_can_log_in_over_plain_amqp(relay: Relay) -> None:
    """Hub, link and agency accounts have no password: over plain AMQP (no certificate) they cannot
    log in, whatever password is tried; with their certificate over TLS they can."""
    m = Management(relay.settings.mgmt_url)
    for user in layout.users(relay.topology):
        assert m.get(f"/api/users/{q(user)}")["password_hash"] == "", user
    agency = relay.names.agency_user(SENDER)
    plain = os.environ.get("LIENTHONG_PLAIN_AMQP_PORT", "5672")
    for password in ("", "guest", agency):
        params = pika.ConnectionParameters("127.0.0.1", int(plain), relay.names.vhost("H41"),
                                           pika.PlainCredentials(agency, password), connection_attempts=1)
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(params).close()
    external_plain = pika.ConnectionParameters("127.0.0.1", int(plain), relay.names.vhost("H41"),
                                               pika.credentials.ExternalCredentials(), connection_attempts=1)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(external_plain).close()
    assert blocking.queue_depth(relay.agency_url(SENDER), wire.inbox_queue(SENDER)) == 0  # TLS + certificate
    with pytest.raises(errors.ConfigError, match="plain AMQP"):
        layout.account_url(Topology.from_dict(
            {"amqp_url": "amqp://127.0.0.1:5672/", "hubs": [{"id": "H41"}],
             "agencies": [{"organ_id": SENDER, "hub": "H41"}]}), "H41", relay.settings.keys.agency_account(SENDER),
            Path("ca"))


def test_a_certificate_from_another_ca_is_refused(relay: Relay, tmp_path: Path) -> None:
    """A client certificate naming an agency's account but issued by another CA does not get in;
    nor does a client that cannot verify the broker (another CA as its trust)."""
    stranger = devpki.make_root("a stranger's CA")
    forged = devpki.issue_account(stranger, relay.names.agency_user(SENDER))
    paths = (tmp_path / "forged-key.pem", tmp_path / "forged-cert.pem")
    devpki.write_pair(paths, forged)
    url = layout.account_url(relay.topology, "H41", paths, relay.settings.keys.broker_ca)
    with pytest.raises(errors.TransientError):
        blocking.queue_depth(url, wire.inbox_queue(SENDER))
    (tmp_path / "other-ca.pem").write_bytes(devpki.pem_cert(stranger.cert))
    distrustful = layout.account_url(relay.topology, "H41", relay.settings.keys.agency_account(SENDER),
                                     tmp_path / "other-ca.pem")
    with pytest.raises(errors.TransientError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        blocking.queue_depth(distrustful, wire.inbox_queue(SENDER))
    assert blocking.queue_depth(relay.agency_url(SENDER), wire.inbox_queue(SENDER)) == 0


@pytest.mark.parametrize("how", ["issue", "export"])
def test_a_hub_runs_with_only_its_own_material(relay: Relay, tmp_path: Path, how: str) -> None:
    """`lienthong pki issue hub H41` (new keys) and `pki export hub H41` (the keys `init` made, as
    docker-compose hands each hub container) write that hub's keys and public files alone (no CA
    key, no other principal's key); a worker of H41 started with only that directory relays a
    document."""
    out = tmp_path / "h41-host"
    done = relay.cli("pki", how, "hub", "H41", "--ca", str(relay.settings.pki), "--out", str(out),
                     "--topology", str(relay.settings.topology))
    assert done.returncode == 0, done.stderr
    keys = sorted(str(p.relative_to(out)) for p in out.rglob("*key*"))
    assert keys == ["hubs/H41/amqp-hub-key.pem", "hubs/H41/amqp-link-key.pem", "hubs/H41/key.pem"]
    assert {p.name for p in (out / "hubs").iterdir()} == set(relay.topology.hubs)  # the others' certificates
    for p in out.rglob("*key*"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    for hub in relay.topology.hubs:
        if hub == "H41":
            relay.start_worker(hub, LIENTHONG_PKI=str(out), LIENTHONG_TRANSPORT_CA=str(out / "transport"))
        else:
            relay.start_worker(hub)
    doc = relay.document(SENDER, [RECIPIENT])
    relay.client(SENDER).send(doc)
    assert [i.body for i in relay.take(RECIPIENT, 1, timeout=60)] == [doc]


def test_secret_files_are_private_from_their_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a permissive umask, a secret is 0600 before its name appears (checked at the rename
    that publishes it), and every key of a dev PKI is 0600."""
    seen: list[int] = []
    real_replace = os.replace

    def watching(src: str | Path, dst: str | Path) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    old = os.umask(0)
    try:
        monkeypatch.setattr(os, "replace", watching)
        write_private(tmp_path / "secret", b"s3cret")
        monkeypatch.undo()
        topo = Topology.load(ROOT / "config" / "topology.yaml")
        devpki.init(tmp_path / "pki", topo, tmp_path / "transport")
    finally:
        os.umask(old)
    assert seen == [0o600] and stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    keys = [*(tmp_path / "pki").rglob("*key*"), *(tmp_path / "transport").rglob("*.key")]
    assert len(keys) > 2 * len(topo.agencies)
    assert {stat.S_IMODE(p.stat().st_mode) for p in keys} == {0o600}
    assert PkiLayout(tmp_path / "pki", tmp_path / "transport").broker_ca.exists()


def test_the_management_url_must_name_an_admin() -> None:
    """No silent fall-back to guest: a management URL without an account is a configuration error."""
    with pytest.raises(errors.ConfigError, match="names no admin account"):
        Management("http://127.0.0.1:15672")
    assert urlsplit(Management("http://a:b@127.0.0.1:15672").base).hostname == "127.0.0.1"


# --- the broker: revocation, no guest, no plain AMQP ----------------------------------------------


def test_a_revoked_account_can_no_longer_log_in(relay: Relay) -> None:
    """An agency's broker account logs in with its certificate; `lienthong pki revoke` puts that
    certificate on the transport CA's CRL, and from the next login the broker refuses it (its
    certificate file unchanged), while another agency's account still gets in."""
    url = relay.agency_url(SENDER)
    assert blocking.queue_depth(url, wire.inbox_queue(SENDER)) == 0
    cert = relay.settings.keys.agency_account(SENDER)[1]
    done = relay.cli("pki", "revoke", str(relay.settings.pki), str(cert))
    assert done.returncode == 0, done.stderr
    assert relay.names.agency_user(SENDER) in done.stdout and "signing" not in done.stdout
    with pytest.raises(errors.TransientError):
        blocking.queue_depth(url, wire.inbox_queue(SENDER))
    assert blocking.queue_depth(relay.agency_url(RECIPIENT), wire.inbox_queue(RECIPIENT)) == 0


def test_guest_is_gone_and_no_listener_speaks_plain_amqp(relay: Relay) -> None:
    """The default account guest (administrator, password guest) does not exist, and the broker
    listens for AMQP only with TLS: nothing answers on the plain port, and the broker lists no
    plain AMQP listener."""
    m = Management(relay.settings.mgmt_url)
    with pytest.raises(errors.ConfigError, match="HTTP 404"):
        m.get("/api/users/guest")
    protocols = {item["protocol"] for item in m.get("/api/overview")["listeners"]}
    assert "amqp/ssl" in protocols and "amqp" not in protocols, protocols
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()


def _own_address() -> str | None:
    """One of this machine's addresses that is not loopback, if it has one."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    found = [line.split()[3].split("/")[0] for line in out.stdout.splitlines() if len(line.split()) > 3]
    return found[0] if found else None


def test_the_admin_account_logs_in_from_loopback_only(relay: Relay) -> None:
    """The admin account (a password account) logs in over TLS from 127.0.0.1, and is refused when
    the same connection comes from this machine's own non-loopback address."""
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try from")
    parts = urlsplit(relay.settings.mgmt_url)
    credentials = pika.PlainCredentials(unquote(parts.username or ""), unquote(parts.password or ""))
    ctx = ssl.create_default_context(cafile=str(relay.settings.keys.broker_ca))

    def login(host: str) -> None:
        params = pika.ConnectionParameters(host, 5671, relay.names.vhost("H41"), credentials, connection_attempts=1,
                                           ssl_options=pika.SSLOptions(ctx, "localhost"))
        pika.BlockingConnection(params).close()

    login("127.0.0.1")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):  # "can only connect via localhost"
        login(address)


def test_the_transport_crl_is_renewed_when_due_and_keeps_its_revocations(tmp_path: Path) -> None:
    """`pki broker-crl --if-due` makes the transport CA's CRL where the broker looks for it (named
    by the CA's OpenSSL name hash), leaves a current one alone, and re-signs one near its
    nextUpdate with the same revoked serials and dates."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.serialization import Encoding

    from broker.relay import brokercrl

    d = tmp_path / "transport"
    ca = devpki.transport_ca(d)
    made = brokercrl.renew(d, if_due=True)
    hashed = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(d / "ca.pem")],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert made == d / "crl" / f"{hashed}.r0" and stat.S_IMODE(made.stat().st_mode) == 0o644
    assert brokercrl.renew(d, if_due=True) is None
    victim = devpki.issue_account(ca, "lt-victim")
    brokercrl.revoke(d, [victim.cert])
    revoked_at = brokercrl.read(d).get_revoked_certificate_by_serial_number(victim.cert.serial_number)
    assert revoked_at is not None
    old = devpki.make_crl(ca, {victim.cert.serial_number: revoked_at.revocation_date_utc}, days=12,
                          last_update=datetime.now(UTC) - timedelta(days=5))
    made.write_bytes(old.public_bytes(Encoding.PEM))
    assert brokercrl.renew(d, if_due=True) == made
    renewed = brokercrl.read(d)
    assert renewed.next_update_utc > datetime.now(UTC) + timedelta(days=20)
    entry = renewed.get_revoked_certificate_by_serial_number(victim.cert.serial_number)
    assert entry is not None and entry.revocation_date_utc == revoked_at.revocation_date_utc
    assert renewed.is_signature_valid(ca.cert.public_key())


@pytest.mark.parametrize("attrs", [
    (("O", "lienthong dev PKI"), ("CN", "lienthong transport CA")),
    (("C", "VN"), ("O", "  Ban Cơ yếu   Chính PHỦ "), ("CN", "RootCA chuyên dùng Chính phủ G2\t X")),
    (("CN", "A" * 64), ("OU", "x" * 150)),
])
def test_the_crl_file_name_is_openssls_name_hash(attrs: tuple[tuple[str, str], ...], tmp_path: Path) -> None:
    """The transport CRL is found by the broker under the issuer's OpenSSL name hash: ours equals
    `openssl x509 -hash` for plain, Vietnamese, oddly spaced and long names."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from broker.core.cafiles import name_hash

    oids = {"O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME, "C": NameOID.COUNTRY_NAME,
            "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}
    ca = devpki.make_root()
    name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca.key.public_key())
            .serial_number(1).not_valid_before(ca.cert.not_valid_before_utc)
            .not_valid_after(ca.cert.not_valid_after_utc).sign(ca.key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(devpki.pem_cert(cert))
    expected = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(tmp_path / "c.pem")],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert name_hash(name) == expected
