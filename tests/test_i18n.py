"""Everything a person reads, in Vietnamese by default and English on request: the catalogues
translate every message the source marks, in NFC; the CLI, its help and its errors speak the
chosen language; browsers get theirs from Accept-Language; error codes never change."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from broker import i18n
from broker.cli import main
from broker.core.errors import LienthongError, UsageError
from broker.i18n import N_, extract

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, lang: str | None = None) -> subprocess.CompletedProcess[str]:
    """``lienthong ARGS`` as a user runs it: no LIENTHONG_LANG unless ``lang``."""
    env = {k: v for k, v in os.environ.items() if k != "LIENTHONG_LANG"}
    if lang is not None:
        env["LIENTHONG_LANG"] = lang
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def test_every_marked_message_is_translated_in_both_languages() -> None:
    """The source marks hundreds of messages (``_``, ``N_``, ``ngettext``, click help), and each has
    a translation, not fuzzy, with the same {fields}, in vi and en; no catalogue entry is stale."""
    assert len(extract.messages()) > 300
    assert extract.problems() == []


def test_a_new_untranslated_message_is_found(tmp_path: Path) -> None:
    """A message marked in the source but in neither catalogue is reported for both languages (so
    the test above fails until it is translated), and so is a mark the extractor cannot see."""
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "new.py").write_text(
        'from broker.i18n import _\nx = _("a sentence nobody translated")\ny = f"{_(\'hidden\')}"\n',
        encoding="utf-8")
    found = extract.problems(tmp_path)
    assert "vi: missing 'a sentence nobody translated' (broker/new.py:2)" in found
    assert "en: missing 'a sentence nobody translated' (broker/new.py:2)" in found
    assert any("broker/new.py:3: a message marked inside an f-string" in p for p in found)


def test_catalogues_are_utf8_and_nfc_with_vietnamese_diacritics() -> None:
    """Both .po files are UTF-8 in NFC (precomposed letters, as Vietnamese text must be); the
    Vietnamese one uses the letters of Vietnamese administrative language."""
    for lang in i18n.LANGUAGES:
        text = i18n.po_file(lang).read_bytes().decode("utf-8")
        assert unicodedata.normalize("NFC", text) == text
    vi = i18n.catalogue("vi")
    assert vi.gettext("Reporting unit: {unit}") == "Đơn vị báo cáo: {unit}"
    assert vi.gettext("REPORT ON ELECTRONIC DOCUMENTS SENT AND RECEIVED THROUGH THE INTERCONNECTION AXIS") == \
        "BÁO CÁO TÌNH HÌNH GỬI, NHẬN VĂN BẢN ĐIỆN TỬ QUA TRỤC LIÊN THÔNG"
    assert vi.gettext("{n} parked message(s)") == "{n} gói tin bị tạm giữ"


def test_numbers_days_and_shares_as_each_language_writes_them() -> None:
    """Vietnamese groups thousands with a dot, writes decimals with a comma and days as dd/mm/yyyy."""
    from datetime import date

    vi, en = i18n.catalogue("vi"), i18n.catalogue("en")
    assert (vi.number(12345), en.number(12345)) == ("12.345", "12,345")
    assert (vi.percent(0.805), en.percent(0.805), vi.percent(None)) == ("80,5%", "80.5%", "-")
    assert (vi.day(date(2026, 11, 1)), en.day(date(2026, 11, 1))) == ("01/11/2026", "2026-11-01")


@pytest.mark.parametrize(("header", "lang"), [
    (None, "vi"), ("", "vi"), ("en-US,en;q=0.9", "en"), ("vi-VN,vi;q=0.9,en;q=0.8", "vi"),
    ("fr-FR, en;q=0.4, vi;q=0.5", "vi"), ("fr", "vi"), ("en;q=0, vi", "vi"), ("de, en-GB;q=0.7", "en"),
    ("*", "vi"), ("en;q=bad", "vi")])
def test_accept_language_picks_the_page_language(header: str | None, lang: str) -> None:
    """A browser's Accept-Language chooses among vi and en by its weights; Vietnamese otherwise."""
    assert i18n.negotiate(header) == lang


def test_an_error_sentence_is_rendered_in_the_readers_language() -> None:
    """An error carries its English template and fields apart: its code and English message never
    change, and the sentence is rendered through whichever catalogue the edge passes; a sentence
    no catalogue knows is shown as written."""
    exc = UsageError(N_("cannot read {path}: {reason}"), path="/x", reason="gone")
    assert exc.code == "USAGE" and exc.message == str(exc) == "cannot read /x: gone"
    assert exc.line() == "ERROR USAGE: cannot read /x: gone"
    assert exc.line(i18n.catalogue("vi").gettext) == "ERROR USAGE: không đọc được /x: gone"
    assert exc.line(i18n.catalogue("en").gettext) == "ERROR USAGE: cannot read /x: gone"
    plain = LienthongError("not marked {yet}", code="CONFIG")
    assert plain.line(i18n.catalogue("vi").gettext) == "ERROR CONFIG: not marked {yet}"


def test_cli_speaks_vietnamese_by_default_and_english_on_request() -> None:
    """Help and output in Vietnamese with no setting; ``--lang en`` (before or after the command)
    and ``LIENTHONG_LANG=en`` switch to English."""
    vi = run("--help")
    assert vi.returncode == 0 and "Cách dùng:" in vi.stdout and "Tùy chọn:" in vi.stdout and "Lệnh:" in vi.stdout
    assert "Báo cáo tình hình gửi, nhận văn bản điện tử" in vi.stdout
    assert unicodedata.is_normalized("NFC", vi.stdout)
    for en in (run("--lang", "en", "--help"), run("report", "--lang", "en", "--help"), run("--help", lang="en")):
        assert en.returncode == 0 and "Usage:" in en.stdout and "Cách dùng" not in en.stdout
    assert run("--version").stdout == "lienthong, phiên bản 0.1.0\n"
    assert run("--version", lang="en").stdout == "lienthong, version 0.1.0\n"


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((*path, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
    return out


@pytest.mark.parametrize("command", _commands(main), ids=" ".join)
def test_every_commands_help_is_translated(command: tuple[str, ...]) -> None:
    """Each command's help, with its options', is Vietnamese by default and English with --lang en:
    the English description of the command and of each option is not in the Vietnamese page."""
    runner = CliRunner()
    vi = runner.invoke(main, [*command, "--help"], env={"LIENTHONG_LANG": "vi"})
    en = runner.invoke(main, [*command, "--lang", "en", "--help"], env={"LIENTHONG_LANG": "vi"})
    assert vi.exit_code == 0 and en.exit_code == 0, vi.output + en.output
    assert vi.output.startswith("Cách dùng:") and en.output.startswith("Usage:")
    cmd: click.Command = main
    for name in command:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    texts = [cmd.help or ""] + [p.help for p in cmd.params if isinstance(p, click.Option) and p.help]
    for text in texts:
        first = " ".join(text.split()[:5])
        assert first in " ".join(en.output.split()), first
        assert first not in " ".join(vi.output.split()), f"untranslated in Vietnamese: {first}"


def test_errors_keep_their_codes_in_both_languages() -> None:
    """A refusal is one line ``ERROR <CODE>: sentence`` in either language, with the same code;
    click's own refusals of bad arguments become ERROR USAGE lines too; an unknown LIENTHONG_LANG
    is refused."""
    vi, en = run("validate", "/nonexistent.edxml"), run("validate", "/nonexistent.edxml", lang="en")
    assert (vi.returncode, en.returncode) == (2, 2)
    assert vi.stderr.startswith("ERROR USAGE: không đọc được /nonexistent.edxml:")
    assert en.stderr.startswith("ERROR USAGE: cannot read /nonexistent.edxml:")
    missing = run("report", "--from", "2026-11-01")
    assert missing.returncode == 2 and missing.stderr == \
        "ERROR USAGE: Thiếu tùy chọn '--to'. (xem lienthong report --help)\n"
    assert run("report", "--from", "2026-11-01", lang="en").stderr == \
        "ERROR USAGE: Missing option '--to'. (see lienthong report --help)\n"
    bad = run("report", "--from", "x", "--to", "y", "--format", "doc")
    assert bad.returncode == 2 and bad.stderr.startswith("ERROR USAGE: Giá trị không hợp lệ cho '--format': 'doc'")
    wrong = run("--help", lang="fr")
    assert wrong.returncode == 2 and wrong.stderr.startswith("ERROR USAGE: LIENTHONG_LANG=fr:")


def test_every_refusal_sentence_is_marked_for_translation() -> None:
    """No error of lienthong (nor a token's, which becomes one) is made with a sentence written out
    unmarked, a literal or an f-string, anywhere in broker/ or adapters/: each is a template marked
    with ``N_`` whose fields come apart, so a reader gets it in their language."""
    assert extract.unmarked_errors() == []
    templates = [m for m, places in extract.messages().items()
                 if any(p.startswith(("broker/core/", "broker/relay/", "adapters/")) for p, _ in places)]
    assert len(templates) > 200


def test_an_unmarked_refusal_is_found_unless_exempted_with_a_reason(tmp_path: Path) -> None:
    """The check sees an error class by its descent from LienthongError (across files), and finds
    a literal, an f-string, a concatenation, ``.format`` and a mark the extractor cannot read
    (``N_(f"...")``), raised or only made; a marked sentence passes, and so does a call with
    ``# untranslated:`` and a reason; the same comment without a reason is reported."""
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "errs.py").write_text(
        "class LienthongError(Exception): ...\nclass Refused(LienthongError): ...\n", encoding="utf-8")
    (tmp_path / "broker" / "use.py").write_text(
        "from broker.errs import Refused\nfrom broker.i18n import N_\nimport broker.errs as errs\n"
        "class Deeper(errs.Refused): ...\n"
        "def f(x):\n"
        "    raise Refused('plain')\n"                                     # 6
        "def g(x):\n"
        "    raise Deeper(f'about {x}')\n"                                 # 8
        "def h(x):\n"
        "    return errs.Refused('a ' + x), Refused('{} b'.format(x))\n"  # 10
        "def i(x):\n"
        "    raise Refused(N_(f'hidden {x}'))\n"                           # 12
        "def j(x):\n"
        "    raise Refused(N_('marked {x}'), x=x)\n"
        "def k(x):\n"
        "    raise Refused('kept',  # untranslated: a test of the exemption\n"
        "                  x)\n"
        "def m(x):\n"
        "    raise Refused(f'no reason {x}')  # untranslated:\n"           # 19
        "def n(x):\n"
        "    raise ValueError(f'not ours {x}')\n", encoding="utf-8")
    found = extract.unmarked_errors(tmp_path)
    assert [f.split(":")[1] for f in found] == ["6", "8", "10", "10", "12", "19"], found
    assert "broker/use.py:8: Deeper's sentence is not marked for translation" in found[1]
    assert found[-1] == "broker/use.py:19: '# untranslated:' needs a reason"
    assert any("not marked" in p for p in extract.problems(tmp_path))


def test_a_refusal_of_the_core_keeps_its_english_message_and_reads_in_vietnamese() -> None:
    """A refusal raised by the core (the parser, the trust store's dates) carries the English
    sentence that logs, receipts and the wire keep, and renders in Vietnamese (dates as dd/mm/yyyy)
    or English through a catalogue; an error given as a field of another reads in the same
    language, as its sentence or (``:line``) its line with the code."""
    from datetime import datetime

    from broker.core import errors
    from broker.core.parsing import ParseLimits, parse

    vi, en = i18n.catalogue("vi").gettext, i18n.catalogue("en").gettext
    with pytest.raises(errors.TooLarge) as too_large:
        parse(b"<a/>" * 10, ParseLimits(max_bytes=8))
    exc = too_large.value
    assert exc.message == "message is 40 bytes; the limit is 8 bytes" == exc.render(en)
    assert exc.line(vi) == "ERROR XML_TOO_LARGE: gói tin có 40 byte; giới hạn là 8 byte"
    revoked = errors.Revoked(N_("certificate {cert!r} was revoked on {day:%Y-%m-%d}"), cert="DMS",
                             day=datetime(2026, 11, 2))
    outer = errors.Unauthorized(N_("the client certificate is not accepted: {reason}"), reason=revoked)
    assert outer.message == "the client certificate is not accepted: certificate 'DMS' was revoked on 2026-11-02"
    assert outer.render(vi) == \
        "chứng thư số máy khách không được chấp nhận: chứng thư số 'DMS' đã bị thu hồi ngày 02/11/2026"
    audit = errors.AuditFailure(N_("{file}: the sender's signature does not verify: {error:line}"), file="m.edxml",
                                error=revoked)
    assert audit.message == "m.edxml: the sender's signature does not verify: ERROR CERT_REVOKED: certificate 'DMS' " \
                            "was revoked on 2026-11-02"
    assert audit.render(vi) == "m.edxml: chữ ký số của cơ quan gửi không hợp lệ: ERROR CERT_REVOKED: chứng thư số " \
                               "'DMS' đã bị thu hồi ngày 02/11/2026"


def test_a_token_refusal_becomes_a_translated_configuration_error() -> None:
    """A PKCS#11 token's refusal keeps its template and fields, so the relay turns it into a
    ConfigError that reads in Vietnamese, with the same English message."""
    from broker import pkcs11
    from broker.core.errors import ConfigError

    with pytest.raises(pkcs11.TokenError) as refused:
        pkcs11.allowed_module("/nonexistent/libtoken.so")
    exc = refused.value
    converted = ConfigError(exc.template, **exc.fields)
    assert converted.message == str(exc) == \
        "the PKCS#11 module /nonexistent/libtoken.so does not exist (install the token's driver)"
    assert converted.render(i18n.catalogue("vi").gettext) == \
        "không có mô-đun PKCS#11 /nonexistent/libtoken.so (hãy cài trình điều khiển của thiết bị token)"


def test_a_server_chooses_its_own_language_for_a_client_that_names_none() -> None:
    """``negotiate`` falls back to the server's language when Accept-Language names neither of
    ours, and to nothing else: a named language still wins."""
    assert i18n.negotiate(None, "en") == "en" and i18n.negotiate("fr, *;q=0.1", "en") == "en"
    assert i18n.negotiate("vi", "en") == "vi" and i18n.negotiate("en", "vi") == "en"


def test_a_stored_refusal_is_explained_in_the_readers_language() -> None:
    """A reason read back from an audit log or a parked message stays the English sentence the hub
    recorded; a Vietnamese reader gets the meaning of its code first, an English reader the
    sentence alone, and a code that is not lienthong's (the broker's own) the sentence alone."""
    import contextvars

    from broker.ops import reasons

    recorded, before = "recipient '999.99.99.H99' is not in the agency directory", i18n.language()

    def shown(lang: str, code: str) -> str:
        def inside() -> str:
            i18n.use(lang)
            return reasons.text(code, recorded)
        return contextvars.copy_context().run(inside)

    assert shown("vi", "RECIPIENT_UNKNOWN") == \
        f"Một cơ quan nhận không có trong danh bạ. Nguyên văn ghi nhận: {recorded}"
    assert shown("en", "RECIPIENT_UNKNOWN") == recorded
    assert shown("vi", "delivery_limit") == recorded
    assert i18n.language() == before  # the languages were chosen in copies of this context
