"""Signatures and trust: the attack corpus, and agreement with signxml on every input.

Each case builds a signed document with the dev PKI, alters it the way an
attacker would, and asserts the specific error code.  ``test_differential``
runs every case through signxml too: where signxml rejects, lienthong
rejects; where lienthong accepts, signxml accepts the same signed bytes.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import signxml
from cryptography import x509
from lxml import etree

from broker.core import errors
from broker.core.algorithms import DS, DS_NS
from broker.core.edxml import E
from broker.core.parsing import parse
from broker.core.signer import SigningKey, sign_tree
from broker.core.topology import Topology
from broker.core.trust import TrustStore
from broker.core.validation import check
from broker.core.verifier import VerifyPolicy, verify_tree
from broker.relay import devpki
from tests.signatures import CASES, SENDER, agency_key, sig_of, signed


@pytest.fixture(scope="module")
def dev_pki(dev_pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session's dev PKI: this module revokes a certificate in it."""
    copy_dir = tmp_path_factory.mktemp("pki-signatures") / "pki"
    shutil.copytree(dev_pki, copy_dir)
    return copy_dir


@pytest.fixture(scope="module")
def store(dev_pki: Path) -> TrustStore:
    return TrustStore.load(dev_pki)


@pytest.fixture(scope="module")
def root(dev_pki: Path) -> devpki.Issued:
    return devpki.load_root(dev_pki)



@pytest.fixture(scope="module")
def corpus(dev_pki: Path, root: devpki.Issued) -> dict[str, bytes]:
    """Every case built once; G17's certificate is revoked in the CRL first."""
    devpki.revoke(dev_pki, [dev_pki / "agencies" / "000.00.00.G17" / "cert.pem"])
    return {name: build(dev_pki, root) for name, build, _ in CASES}


@pytest.mark.parametrize(("name", "expected"), [(n, e) for n, _, e in CASES])
def test_corpus(name: str, expected: str | None, corpus: dict[str, bytes], dev_pki: Path,
                topology: Topology) -> None:
    """Each attack is refused with its specific code; good messages pass every check."""
    store = TrustStore.load(dev_pki)  # after the revocation above
    data = corpus[name]
    if expected is None:
        result = check(data, trust=store, topology=topology)
        assert result.message.sender.organ_id == SENDER
        assert result.sender is not None and result.sender.organ_id == SENDER
        assert result.sha256 == hashlib.sha256(data).hexdigest()
    else:
        with pytest.raises(errors.LienthongError) as info:
            check(data, trust=store, topology=topology)
        assert info.value.code == expected, info.value.line()


def test_sha1_accepted_with_legacy_switch(corpus: dict[str, bytes], dev_pki: Path) -> None:
    """The documented switch for legacy senders lets an otherwise valid SHA-1 signature through."""
    verify_tree(parse(corpus["sha1"]), TrustStore.load(dev_pki), policy=VerifyPolicy(allow_sha1=True))
    with pytest.raises(errors.WeakAlgorithm):
        verify_tree(parse(corpus["sha1"]), TrustStore.load(dev_pki))


def test_missing_crl_is_refused(corpus: dict[str, bytes], dev_pki: Path, tmp_path: Path) -> None:
    """Without a current CRL from the issuer, revocation cannot be checked: CRL_UNAVAILABLE."""
    (tmp_path / "root-ca.pem").write_bytes((dev_pki / "root-ca.pem").read_bytes())
    with pytest.raises(errors.RevocationUnknown):
        verify_tree(parse(corpus["good-rsa"]), TrustStore.load(tmp_path))
    # and an explicit opt-out accepts it
    verify_tree(parse(corpus["good-rsa"]), TrustStore.load(tmp_path, require_crl=False))


def test_stale_crl_is_refused(corpus: dict[str, bytes], dev_pki: Path, root: devpki.Issued,
                              tmp_path: Path) -> None:
    """A CRL past its nextUpdate does not count as current."""
    from cryptography.hazmat.primitives.serialization import Encoding
    (tmp_path / "root-ca.pem").write_bytes((dev_pki / "root-ca.pem").read_bytes())
    old = devpki.make_crl(root, [], days=1, last_update=datetime.now(UTC) - timedelta(days=3))
    (tmp_path / "root-ca.crl.pem").write_bytes(old.public_bytes(Encoding.PEM))
    with pytest.raises(errors.RevocationUnknown):
        verify_tree(parse(corpus["good-rsa"]), TrustStore.load(tmp_path))


def test_intermediate_ca_chain(dev_pki: Path, root: devpki.Issued, topology: Topology, tmp_path: Path) -> None:
    """A signer under an intermediate CA (sent in KeyInfo) chains to the root; each level's CRL is checked."""
    from cryptography.hazmat.primitives.serialization import Encoding
    inter = devpki.issue(root, "intermediate CA", kind="ec", ca_cert=True)
    leaf = devpki.issue(inter, "agency under intermediate", uid=SENDER)
    data = signed(SigningKey(leaf.key, leaf.cert, chain=(inter.cert,)))
    (tmp_path / "root-ca.pem").write_bytes((dev_pki / "root-ca.pem").read_bytes())
    (tmp_path / "root.crl.pem").write_bytes(devpki.make_crl(root).public_bytes(Encoding.PEM))
    with pytest.raises(errors.RevocationUnknown):  # no CRL from the intermediate yet
        check(data, trust=TrustStore.load(tmp_path), topology=topology)
    (tmp_path / "inter.crl.pem").write_bytes(devpki.make_crl(inter).public_bytes(Encoding.PEM))
    result = check(data, trust=TrustStore.load(tmp_path), topology=topology)
    assert [c.subject for c in result.signature.chain.path] == [leaf.cert.subject, inter.cert.subject,
                                                                 root.cert.subject]
    (tmp_path / "inter.crl.pem").write_bytes(
        devpki.make_crl(inter, [leaf.cert.serial_number]).public_bytes(Encoding.PEM))
    with pytest.raises(errors.Revoked):
        check(data, trust=TrustStore.load(tmp_path), topology=topology)


def test_pinned_fingerprint_binding(corpus: dict[str, bytes], dev_pki: Path) -> None:
    """A directory entry that pins certificate fingerprints accepts only those certificates."""
    raw = {"hubs": [{"id": "national"}],
           "agencies": [{"organ_id": SENDER, "hub": "national", "cert_sha256": ["00" * 32]}]}
    pinned = Topology.from_dict(raw)
    with pytest.raises(errors.SignerMismatch):
        check(corpus["good-rsa"], trust=TrustStore.load(dev_pki), topology=pinned)
    from broker.core.trust import fingerprint
    cert = x509.load_pem_x509_certificate((dev_pki / "agencies" / SENDER / "cert.pem").read_bytes())
    raw["agencies"][0]["cert_sha256"] = [fingerprint(cert)]
    check(corpus["good-rsa"], trust=TrustStore.load(dev_pki), topology=Topology.from_dict(raw))


def test_profile_checked_even_without_schema(corpus: dict[str, bytes], store: TrustStore) -> None:
    """The verifier enforces the signature's place on its own (defence in depth behind the schema)."""
    with pytest.raises(errors.SignatureProfile):
        verify_tree(parse(corpus["signature-in-body"]), store)


def test_tree_unchanged_by_verification(corpus: dict[str, bytes], store: TrustStore) -> None:
    """Verifying detaches and restores the Signature: the tree serializes to the same bytes after."""
    tree = parse(corpus["good-rsa"])
    before = etree.tostring(tree)
    verify_tree(tree, store)
    assert etree.tostring(tree) == before


def _signxml_verdict(data: bytes, anchor: Path) -> bytes | None:
    """signxml's verdict: the signed bytes it vouches for, or None when it rejects."""
    try:
        result = signxml.XMLVerifier().verify(
            data, ca_pem_file=str(anchor),
            expect_config=signxml.SignatureConfiguration(
                require_x509=True, expect_references=1,
                signature_methods=frozenset(signxml.SignatureMethod),
                digest_algorithms=frozenset(signxml.DigestAlgorithm)))
    except signxml.exceptions.InvalidInput:
        return None
    except (signxml.exceptions.InvalidSignature, signxml.exceptions.InvalidDigest,
            signxml.exceptions.InvalidCertificate):
        return None
    return etree.tostring(result.signed_xml, method="c14n", exclusive=True, with_comments=False)


@pytest.mark.parametrize("name", [n for n, _, _ in CASES])
def test_differential_with_signxml(name: str, corpus: dict[str, bytes], dev_pki: Path) -> None:
    """On every input: if signxml rejects, lienthong rejects; if lienthong accepts, signxml accepts
    and vouches for exactly the document lienthong read."""
    data = corpus[name]
    theirs = _signxml_verdict(data, dev_pki / "root-ca.pem")
    try:
        # signxml checks neither CRLs nor the agency directory: compare on what both check
        verify_tree(parse(data), TrustStore.load(dev_pki, require_crl=False),
                    policy=VerifyPolicy(allow_sha1=True))
        ours = True
    except errors.LienthongError:
        ours = False
    if theirs is None:
        assert not ours, f"signxml rejects {name} but lienthong accepts it"
    if ours:
        assert theirs is not None
        tree = parse(data)
        sig = sig_of(tree.getroot())
        sig.getparent().remove(sig)
        assert theirs == etree.tostring(tree, method="c14n", exclusive=True, with_comments=False)


def test_signature_is_last_child_of_header(corpus: dict[str, bytes]) -> None:
    """The signer places ds:Signature as the last child of edXMLHeader, with the ds prefix."""
    header = parse(corpus["good-rsa"]).getroot().find(f"{E}edXMLEnvelope/{E}edXMLHeader")
    assert header[-1].tag == DS + "Signature"
    assert header[-1].nsmap.get("ds") == DS_NS


def test_signing_twice_is_refused(corpus: dict[str, bytes], dev_pki: Path) -> None:
    """A message is signed once; signing a signed message is a profile error, not a second signature."""
    with pytest.raises(errors.SignatureProfile):
        sign_tree(parse(corpus["good-rsa"]), agency_key(dev_pki))
