"""The hardened parser against the classic XML attacks: each refused with its code, nothing fetched."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.core import errors
from broker.core.parsing import ParseLimits, parse
from tests.samples import sample


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'<!ENTITY x "pwned">')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[str]:
    """A local HTTP server that records every request it receives."""
    _Recorder.hits = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _code(data: bytes, limits: ParseLimits | None = None) -> str:
    with pytest.raises(errors.RejectedInput) as info:
        parse(data, limits) if limits else parse(data)
    return info.value.code


def test_xxe_to_local_file(tmp_path: Path) -> None:
    """An external entity naming a local file is refused and the file's content never appears."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    data = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<r>&x;</r>').encode()
    assert _code(data) == "XML_FORBIDDEN"


def test_xxe_to_network_sends_no_request(listener: str) -> None:
    """External entities and external DTDs pointing at a listener: refused, and the listener sees nothing."""
    for data in (
        f'<!DOCTYPE r [<!ENTITY x SYSTEM "{listener}/entity">]><r>&x;</r>'.encode(),
        f'<!DOCTYPE r SYSTEM "{listener}/dtd"><r/>'.encode(),
        f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{listener}/param"> %p;]><r/>'.encode(),
    ):
        assert _code(data) == "XML_FORBIDDEN"
    assert _Recorder.hits == []


def test_doctype_hidden_after_long_prolog(listener: str) -> None:
    """A DOCTYPE pushed past the quick prefix scan is still refused after parsing, with no request."""
    data = (b'<?xml version="1.0"?>' + b"<!--" + b"x" * 8000 + b"-->"
            + f'<!DOCTYPE r SYSTEM "{listener}/late"><r/>'.encode())
    assert _code(data) == "XML_FORBIDDEN"
    assert _Recorder.hits == []


def test_billion_laughs() -> None:
    """Exponential entity expansion is refused before any expansion."""
    lol = '<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10)
    ) + ']><lolz>&lol9;</lolz>'
    assert _code(lol.encode()) == "XML_FORBIDDEN"


def test_undeclared_entity_is_malformed() -> None:
    """An entity reference without a declaration is not well-formed."""
    assert _code(b"<r>&x;</r>") == "XML_MALFORMED"


def test_xinclude(tmp_path: Path) -> None:
    """XInclude elements are refused (and never processed)."""
    data = (b'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="/etc/passwd" parse="text"/></r>')
    assert _code(data) == "XML_FORBIDDEN"


def test_deep_nesting() -> None:
    """Nesting beyond the configured depth is refused; at the limit it is accepted."""
    limits = ParseLimits(max_depth=20)
    assert parse(b"<a>" * 20 + b"</a>" * 20, limits).getroot().tag == "a"
    assert _code(b"<a>" * 21 + b"</a>" * 21, limits) == "XML_TOO_DEEP"
    assert _code(b"<a>" * 5000 + b"</a>" * 5000) == "XML_TOO_DEEP"


def test_oversize() -> None:
    """A message over the size limit is refused before parsing."""
    limits = ParseLimits(max_bytes=1000)
    assert _code(b"<a>" + b"x" * 2000 + b"</a>", limits) == "XML_TOO_LARGE"


def test_malformed_samples_from_the_axis_kit() -> None:
    """The two malformed samples of the national kit are refused as malformed, with a line number."""
    for name in ("edoc_new.edxml", "edoc.edxml"):
        with pytest.raises(errors.MalformedXML) as info:
            parse(sample(name))
        assert "line" in info.value.message


def test_parse_keeps_comments_and_whitespace() -> None:
    """Parsing keeps what canonicalization needs to reproduce the signed bytes."""
    tree = parse(b"<r>\n  <!-- c -->\n  <a>x</a>\n</r>")
    root = tree.getroot()
    assert root.text == "\n  "
    assert len(root) == 2
