"""One revocation truth for hubs and recipients: the findings of the trust review about
revocation, each reproduced, each of which must now fail.

- a chain judged before a revocation date is not reused after it;
- hub certificates are judged at each record, so a revoked hub's records are refused while the
  others go on, and one revoked hub certificate stops no hub from starting;
- recipients judge with the hubs' CRL fetch, OCSP and grace;
- OCSP: a delegated responder's validity, nonces, answers without nextUpdate; CRLs lienthong
  cannot read whole (delta, indirect, partial) are refused as CONFIG naming the file, and a CRL
  with an issuing distribution point counts only for what it covers.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.cli.clients import delivery_check
from broker.core import deployment, wire
from broker.core.delivery import DeliveryCheck
from broker.core.errors import LienthongError
from broker.core.topology import Topology
from broker.core.trust import RevocationPolicy, TrustStore
from broker.relay import devpki
from broker.relay.assemble import Assembled, assemble, hub_certificates
from broker.relay.revocation import OcspClient, fetch_crls
from broker.relay.store import open_store
from broker.settings import PkiLayout, Settings, Tuning
from tests import hops

ROOT = Path(__file__).resolve().parents[1]
SENDER, FAR = hops.SENDER, hops.RECIPIENT  # H41 -> national -> H14 -> H14-D31


@pytest.fixture()
def own_pki(dev_pki: Path, tmp_path: Path) -> Path:
    """A copy of the session's dev PKI this test may revoke in."""
    copy = tmp_path / "pki"
    shutil.copytree(dev_pki, copy)
    return copy


def _cert(pki: Path, organ_id: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(PkiLayout(pki).agency(organ_id)[1].read_bytes())


def _code(call: Any) -> str:
    with pytest.raises(LienthongError) as info:
        call()
    return info.value.code


def _write_crl(pki: Path, crl: x509.CertificateRevocationList, name: str = "root-ca.crl.pem") -> None:
    (pki / name).write_bytes(crl.public_bytes(Encoding.PEM))


def _crl(root: devpki.Issued, revoked: dict[int, datetime], *extensions: tuple[x509.ExtensionType, bool],
         last_update: datetime | None = None) -> x509.CertificateRevocationList:
    start = last_update or datetime.now(UTC) - timedelta(minutes=1)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(root.cert.subject)
               .last_update(start).next_update(start + timedelta(days=30)))
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    for serial, when in revoked.items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(root.key, hashes.SHA256())


# --- the chain cache and revocation dates ---------------------------------------------------------


def test_a_chain_judged_before_its_revocation_date_is_not_reused_after_it(own_pki: Path) -> None:
    """The signer was revoked 2 minutes ago (the CRL the snapshot holds says so).  Judged first at
    "now - 4 min" it is good then, and the answer is remembered; judged at "now" the same
    snapshot must refuse it CERT_REVOKED (the cached answer used to let it in)."""
    now = datetime.now(UTC)
    cert = _cert(own_pki, SENDER)
    _write_crl(own_pki, _crl(devpki.load_root(own_pki), {cert.serial_number: now - timedelta(minutes=2)}))
    store = TrustStore.load(own_pki)
    judged = store.validate(cert, at=now - timedelta(minutes=4))
    assert judged.path[0] == cert and judged.valid_until <= now - timedelta(minutes=2)
    assert _code(lambda: store.validate(cert)) == "CERT_REVOKED"
    assert store.validate(cert, at=now - timedelta(minutes=3)).path[0] == cert  # before the date: still good


def test_an_ocsp_revocation_date_bounds_the_cached_chain_too(own_pki: Path) -> None:
    """The same through OCSP (no CRL): the responder says the signer was revoked 2 minutes ago; a
    chain judged at "now - 4 min" is good then and refused at "now"."""
    (own_pki / "root-ca.crl.pem").unlink()
    now = datetime.now(UTC)
    cert = _cert(own_pki, SENDER)
    with _responder(own_pki, revoked={cert.serial_number: now - timedelta(minutes=2)}) as (url, _):
        store = TrustStore.load(own_pki, status_source=OcspClient(url))
        assert store.validate(cert, at=now - timedelta(minutes=4)).path[0] == cert
        assert _code(lambda: store.validate(cert)) == "CERT_REVOKED"


# --- hub certificates, judged at each record ------------------------------------------------------


def _to(outcome: Any, hub: str) -> Any:
    return next(c for c in outcome.copies if str(c.target) == f"hub:{hub}" and wire.kind_of(c.headers) == "edxml")


def test_a_revoked_hubs_records_are_refused_while_the_others_go_on(own_pki: Path, topology: Topology) -> None:
    """H41's certificate is revoked while the national hub runs.  From its next trust snapshot on,
    the national hub refuses what H41 forwards, HUB_REVOKED (not standing: the bytes are not at
    fault), while a document from Cao Bằng crosses it as before; a recipient refuses a message whose
    trace holds H41's record the same way."""
    hubs = hops.hops(own_pki, topology)
    body = hops.document(own_pki, topology, SENDER, [FAR])
    outcomes = hops.carry(hubs, body)
    from_h41 = hops.from_hub(_to(outcomes[0], "national"), "H41")
    assert hubs["national"].process(from_h41).verdict == "forwarded"
    [inbox] = [c for c in outcomes[-1].copies if str(c.target) == f"inbox:{FAR}"]
    certs = hub_certificates(own_pki, topology)
    DeliveryCheck(TrustStore.load(own_pki), topology, certs)(FAR, "edxml", body, inbox.headers[wire.H_TRACE])

    devpki.revoke(own_pki, [PkiLayout(own_pki).hub("H41")[1]])
    snapshot = TrustStore.load(own_pki)
    now = {h: hop.with_trust(snapshot) for h, hop in hubs.items()}
    refused = now["national"].process(from_h41)
    assert (refused.verdict, refused.code, refused.standing) == ("rejected", "HUB_REVOKED", False)
    assert "H41" in refused.reason and "CERT_REVOKED" in refused.reason
    other = hops.document(own_pki, topology, FAR, [SENDER])
    route = ("H14-D31", "H14", "national", "H41")
    assert [o.verdict for o in hops.carry(now, other, route, sender=FAR)] == ["forwarded"] * 3 + ["delivered"]
    recipient = DeliveryCheck(snapshot, topology, certs)
    assert _code(lambda: recipient(FAR, "edxml", body, inbox.headers[wire.H_TRACE])) == "HUB_REVOKED"


def _settings(base: Path, pki: Path, revocation: dict[str, Any] | None = None, fetch_seconds: float = 0) -> Settings:
    raw = yaml.safe_load((ROOT / "config" / "topology.yaml").read_text(encoding="utf-8"))
    raw["settings"] = {**(raw.get("settings") or {}), "revocation": revocation or {}}
    base.mkdir(parents=True, exist_ok=True)
    (base / "topology.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return Settings(data_dir=base / "data", topology=base / "topology.yaml", pki=pki,
                    state_url=str(base / "state"), mgmt_url="http://127.0.0.1:1",
                    tuning=Tuning(crl_fetch_seconds=fetch_seconds))


def _assembled(settings: Settings, hub: str) -> Assembled:
    """Hub ``hub`` as its worker starts it."""
    store = open_store(settings.state_url, hub=hub)
    try:
        return assemble(settings, hub, store)
    finally:
        store.close()


def test_one_revoked_hub_certificate_stops_no_hub_from_starting(own_pki: Path, tmp_path: Path) -> None:
    """H41's certificate is on the CRL when the hubs start: every other hub starts (each used to
    validate every hub's certificate at start, and stopped on the first revoked one), and H41's
    records are refused when they come."""
    devpki.revoke(own_pki, [PkiLayout(own_pki).hub("H41")[1]])
    settings = _settings(tmp_path, own_pki)
    for hub in ("national", "H14", "H14-D31"):
        hop = _assembled(settings, hub).hop
        assert hop.hub == hub and "H41" in hop.hub_certs


# --- recipients: the hubs' revocation truth -------------------------------------------------------


def _delivered(pki: Path, topology: Topology) -> tuple[bytes, list[str]]:
    """A document from H41's commune as the last hub put it into FAR's inbox: (bytes, trace)."""
    body = hops.document(pki, topology, SENDER, [FAR])
    [inbox] = [c for c in hops.carry(hops.hops(pki, topology), body)[-1].copies if str(c.target) == f"inbox:{FAR}"]
    return body, list(inbox.headers[wire.H_TRACE])


def test_recipients_have_the_hubs_grace_and_ocsp(own_pki: Path, topology: Topology, tmp_path: Path) -> None:
    """The CA's CRL is ten days overdue.  A recipient used to refuse everything then
    (CRL_UNAVAILABLE: a bare trust store); now it judges as its hubs do: with a grace of eleven
    days (settings.revocation) it takes the document, and with nine days it asks the OCSP
    responder the topology names (of the hubs' certificates too), which says the signer is
    revoked (CERT_REVOKED, by OCSP)."""
    body, trace = _delivered(own_pki, topology)
    root = devpki.load_root(own_pki)
    _write_crl(own_pki, devpki.make_crl(root, [], days=30, last_update=datetime.now(UTC) - timedelta(days=40)))
    lenient = _settings(tmp_path / "lenient", own_pki, {"grace_hours": 11 * 24})
    check = delivery_check(lenient, Topology.load(lenient.topology))
    check(FAR, "edxml", body, trace)
    hub_trust = _assembled(lenient, "H14-D31").trust.current()
    recipient_trust = check.trust.current()
    assert recipient_trust.policy == hub_trust.policy == RevocationPolicy(grace=timedelta(days=11))
    assert type(recipient_trust.status_source) is type(hub_trust.status_source) is OcspClient
    revoked = {_cert(own_pki, SENDER).serial_number: datetime.now(UTC) - timedelta(days=1)}
    with _responder(own_pki, revoked=revoked) as (url, responder):
        strict = _settings(tmp_path / "strict", own_pki, {"grace_hours": 9 * 24, "ocsp_url": url})
        check = delivery_check(strict, Topology.load(strict.topology))
        with pytest.raises(LienthongError) as info:
            check(FAR, "edxml", body, trace)
        assert info.value.code == "CERT_REVOKED" and "OCSP" in info.value.message and responder.asked


def test_recipients_fetch_crls_as_hubs_do(own_pki: Path, topology: Topology, tmp_path: Path,
                                          ca_site: tuple[str, dict[str, bytes]]) -> None:
    """The CA publishes a CRL revoking the sender at the URL of settings.revocation.crl_urls.  A
    recipient's trust store fetches it (as its hubs do, into the data directory's CRL cache) and
    refuses the sender's document CERT_REVOKED; the trust directory alone still clears it."""
    body, trace = _delivered(own_pki, topology)
    base, files = ca_site
    time.sleep(1.1)  # newer than the trust directory's CRL by its thisUpdate (whole seconds), made at start
    files["/root.crl"] = devpki.make_crl(devpki.load_root(own_pki),
                                         [_cert(own_pki, SENDER).serial_number]).public_bytes(Encoding.DER)
    settings = _settings(tmp_path, own_pki, {"crl_urls": [f"{base}/root.crl"]}, fetch_seconds=3600)
    check = delivery_check(settings, Topology.load(settings.topology))
    deadline = time.monotonic() + 20
    while not list((settings.data_dir / "crls").glob("*.crl")) and time.monotonic() < deadline:
        time.sleep(0.1)
    check.trust.refresh(every=0)  # type: ignore[attr-defined]
    with pytest.raises(LienthongError) as info:
        check(FAR, "edxml", body, trace)
    assert info.value.code == "CERT_REVOKED"
    DeliveryCheck(TrustStore.load(own_pki), topology, hub_certificates(own_pki, topology))(FAR, "edxml", body, trace)


# --- OCSP -----------------------------------------------------------------------------------------


class _Responder(http.server.BaseHTTPRequestHandler):
    """An OCSP responder on loopback.  ``signer`` signs (a delegated responder, sent with the
    answer), else the CA; ``nonce``: "echo" the request's, "other" (a wrong one) or "none";
    ``next_update`` None: an answer without nextUpdate, ``age`` old."""

    ca: devpki.Issued
    signer: devpki.Issued | None = None
    certs: list[x509.Certificate] = []
    revoked: dict[int, datetime] = {}
    nonce = "echo"
    next_update: timedelta | None = timedelta(hours=1)
    age = timedelta(minutes=1)
    asked: list[bytes | None] = []

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        request = ocsp.load_der_ocsp_request(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            nonce: bytes | None = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        self.asked.append(nonce)
        now = datetime.now(UTC)
        subject = next(c for c in self.certs if c.serial_number == request.serial_number)
        when = self.revoked.get(request.serial_number)
        builder = (ocsp.OCSPResponseBuilder()
                   .add_response(cert=subject, issuer=self.ca.cert, algorithm=hashes.SHA1(),
                                 cert_status=ocsp.OCSPCertStatus.REVOKED if when else ocsp.OCSPCertStatus.GOOD,
                                 this_update=now - self.age,
                                 next_update=now + self.next_update if self.next_update else None,
                                 revocation_time=when, revocation_reason=None))
        signer = self.signer or self.ca
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        if self.signer is not None:
            builder = builder.certificates([self.signer.cert])
        if self.nonce != "none" and nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce if self.nonce == "echo" else b"\x00" * 16),
                                            critical=False)
        body = builder.sign(signer.key, hashes.SHA256()).public_bytes(Encoding.DER)
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _responder(pki: Path, **attrs: Any) -> Iterator[tuple[str, type[_Responder]]]:
    """A responder for the agencies' and hubs' certificates of ``pki``, shaped by ``attrs``: (URL,
    its class, whose ``asked`` lists the nonce of each request and whose attributes may be changed)."""
    certs = [x509.load_pem_x509_certificate(p.read_bytes()) for p in pki.glob("*/*/cert.pem")]
    handler = type("Ocsp", (_Responder,), {"ca": devpki.load_root(pki), "certs": certs, "asked": [], **attrs})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()


def test_an_expired_delegated_responder_vouches_for_nothing(own_pki: Path) -> None:
    """A responder the CA delegated (EKU OCSP signing) whose own certificate expired yesterday says
    "good": not believed (CRL_UNAVAILABLE); the same answer from a delegate within its validity
    counts."""
    (own_pki / "root-ca.crl.pem").unlink()
    root, cert = devpki.load_root(own_pki), _cert(own_pki, SENDER)
    expired = devpki.issue(root, "OCSP responder", kind="ec", eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
                           not_before=datetime.now(UTC) - timedelta(days=3), days=2)
    with _responder(own_pki, signer=expired) as (url, _):
        store = TrustStore.load(own_pki, status_source=OcspClient(url))
        assert _code(lambda: store.validate(cert)) == "CRL_UNAVAILABLE"
    current = devpki.issue(root, "OCSP responder", kind="ec", eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    with _responder(own_pki, signer=current) as (url, _):
        assert TrustStore.load(own_pki, status_source=OcspClient(url)).validate(cert).path[0] == cert


def test_ocsp_requests_carry_a_nonce_the_answer_must_echo(own_pki: Path) -> None:
    """Each request carries a fresh 16-byte nonce.  An answer echoing another nonce is not
    believed; a responder that echoed ours once is not believed later without one (an old answer
    replayed); a responder that never echoes one is believed (nonces are optional in OCSP)."""
    (own_pki / "root-ca.crl.pem").unlink()
    root = devpki.load_root(own_pki)
    sender, other = _cert(own_pki, SENDER), _cert(own_pki, FAR)
    with _responder(own_pki, nonce="other") as (url, handler):
        assert OcspClient(url).status(sender, root.cert) is None
        handler.nonce = "echo"
        client = OcspClient(url)
        assert client.status(sender, root.cert) is not None
        handler.nonce = "none"
        assert client.status(other, root.cert) is None
        assert OcspClient(url).status(other, root.cert) is not None  # a client that never saw it echo
        assert all(n is not None and len(n) == 16 for n in handler.asked) and len(set(handler.asked)) == 4


def test_an_ocsp_answer_without_next_update_counts_only_briefly(own_pki: Path) -> None:
    """An answer without nextUpdate used to count for an hour.  It now counts for
    settings.revocation.ocsp_max_age_seconds (300 s by default) after its thisUpdate: one issued
    ten minutes ago is not believed, one issued a minute ago is, until four minutes from now; a
    deployment may allow longer."""
    (own_pki / "root-ca.crl.pem").unlink()
    root, cert = devpki.load_root(own_pki), _cert(own_pki, SENDER)
    with _responder(own_pki, next_update=None, age=timedelta(minutes=10)) as (url, handler):
        assert OcspClient(url).status(cert, root.cert) is None
        allowed = deployment.read({"revocation": {"ocsp_max_age_seconds": 900}}).revocation.ocsp_max_age_seconds
        assert OcspClient(url, max_age=timedelta(seconds=allowed)).status(cert, root.cert) is not None
        handler.age = timedelta(minutes=1)
        answer = OcspClient(url).status(cert, root.cert)
        assert answer is not None and answer.revoked_at is None
        assert timedelta(minutes=3) < answer.good_until - datetime.now(UTC) <= timedelta(minutes=4, seconds=1)
    with pytest.raises(LienthongError) as info:
        deployment.read({"revocation": {"ocsp_max_age_seconds": 0}})
    assert info.value.code == "CONFIG" and "ocsp_max_age_seconds" in info.value.message


# --- CRLs lienthong cannot read whole, and CRLs of a narrower scope -------------------------------


def test_delta_and_partial_crls_are_refused_as_config_naming_the_file(
        own_pki: Path, ca_site: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    """A delta CRL (only what changed since a base CRL), an indirect CRL (other issuers'
    certificates) and one for some revocation reasons only would clear certificates they do not
    speak for if read as full CRLs: dropped into the trust store, each stops the load with CONFIG
    naming its file (a sentence, no traceback, from the CLI too); fetched, each is refused and not
    kept."""
    root = devpki.load_root(own_pki)
    delta = _crl(root, {}, (x509.DeltaCRLIndicator(1), True))
    indirect = _crl(root, {}, (x509.IssuingDistributionPoint(None, None, False, False, None, True, False), True))
    partial = _crl(root, {}, (x509.IssuingDistributionPoint(
        None, None, False, False, frozenset({x509.ReasonFlags.key_compromise}), False, False), True))
    for name, crl in (("delta.crl", delta), ("indirect.crl", indirect), ("partial.crl", partial)):
        _write_crl(own_pki, crl, name)
        with pytest.raises(LienthongError) as info:
            TrustStore.load(own_pki)
        assert info.value.code == "CONFIG" and name in info.value.message, info.value.message
        (own_pki / name).unlink()
    _write_crl(own_pki, delta, "delta.crl")
    doc = tmp_path / "doc.edxml"
    doc.write_bytes(hops.document(own_pki, Topology.load(ROOT / "config" / "topology.yaml"), SENDER, [FAR]))
    cli = subprocess.run([sys.executable, "-m", "broker.cli", "--lang", "en", "verify", str(doc), "--trust",
                          str(own_pki)], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and "ERROR CONFIG" in cli.stderr and "delta.crl" in cli.stderr
    assert "Traceback" not in cli.stderr
    (own_pki / "delta.crl").unlink()
    base, files = ca_site
    files["/delta.crl"] = delta.public_bytes(Encoding.DER)
    report = fetch_crls(TrustStore.load(own_pki), tmp_path / "crls", [f"{base}/delta.crl"])
    assert report.fetched == [] and "delta CRL" in report.refused[0][1]
    assert list((tmp_path / "crls").glob("*.crl")) == []


def test_a_crl_counts_only_for_the_certificates_its_scope_covers(own_pki: Path) -> None:
    """A CRL whose issuing distribution point says it lists only CA certificates says nothing of an
    agency's (CRL_UNAVAILABLE, where it used to clear it), nor does a partition the certificate
    does not name; one for end-entity certificates only that lists the agency revokes it."""
    root, cert = devpki.load_root(own_pki), _cert(own_pki, SENDER)

    def idp(*, user: bool = False, ca: bool = False, name: str | None = None) -> tuple[x509.ExtensionType, bool]:
        full = [x509.UniformResourceIdentifier(name)] if name else None
        return x509.IssuingDistributionPoint(full, None, user, ca, None, False, False), True

    _write_crl(own_pki, _crl(root, {}, idp(ca=True)))
    assert _code(lambda: TrustStore.load(own_pki).validate(cert)) == "CRL_UNAVAILABLE"
    _write_crl(own_pki, _crl(root, {}, idp(name="http://ca.example/part-7.crl")))
    assert _code(lambda: TrustStore.load(own_pki).validate(cert)) == "CRL_UNAVAILABLE"
    _write_crl(own_pki, _crl(root, {cert.serial_number: datetime.now(UTC) - timedelta(minutes=1)}, idp(user=True)))
    assert _code(lambda: TrustStore.load(own_pki).validate(cert)) == "CERT_REVOKED"
    _write_crl(own_pki, _crl(root, {}, idp(user=True)))
    assert TrustStore.load(own_pki).validate(cert).path[0] == cert


