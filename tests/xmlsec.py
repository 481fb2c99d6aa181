"""Debian's xmlsec1, the independent XMLDSig implementation the interop tests hold lienthong's
signatures against: signing with it, verifying with it, and the document they exchange."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lxml import etree

from broker.core.edxml import E, Organ, build_document
from broker.core.signer import SigningKey

DS = "http://www.w3.org/2000/09/xmldsig#"
G22, H41 = "000.00.00.G22", "000.00.00.H41"
TEMPLATE = f"""<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#{{method}}"/>
<ds:Reference URI=""><ds:Transforms>
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>
<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference>
</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature>"""


def document(sender: str = G22, subject: str = "Liên thông xmlsec1") -> bytes:
    return build_document(Organ(sender, "sender"), [Organ(H41, "UBND tỉnh Nghệ An")], subject=subject,
                          attachments=[("cv.pdf", "application/pdf", b"%PDF-1.7 " + os.urandom(3000))])


def agency_key(pki: Path, organ: str = G22) -> SigningKey:
    return SigningKey.load(pki / "agencies" / organ / "key.pem", pki / "agencies" / organ / "cert.pem")


def xmlsec_verify(pki: Path, data: bytes, tmp: Path) -> subprocess.CompletedProcess[str]:
    f = tmp / "verify.xml"
    f.write_bytes(data)
    return subprocess.run(["xmlsec1", "--verify", "--trusted-pem", str(pki / "root-ca.pem"), str(f)],
                          capture_output=True, text=True)


def xmlsec_sign(key_pem: Path, cert_pem: Path, data: bytes, tmp: Path, method: str = "rsa-sha256") -> bytes:
    tree = etree.fromstring(data)
    tree.find(f"{E}edXMLEnvelope/{E}edXMLHeader").append(etree.fromstring(TEMPLATE.format(method=method)))
    (tmp / "tmpl.xml").write_bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
    subprocess.run(["xmlsec1", "--sign", "--privkey-pem", f"{key_pem},{cert_pem}", "--output",
                    str(tmp / "signed.xml"), str(tmp / "tmpl.xml")], check=True, capture_output=True)
    return (tmp / "signed.xml").read_bytes()
