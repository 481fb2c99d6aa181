"""Everything a person reads, in their language: Vietnamese by default, English on request.

Messages are written in the source in English, marked for translation, and translated through
gettext catalogues (``broker/i18n/locale/<lang>/LC_MESSAGES/lienthong.po``, kept with Babel:
``python -m broker.i18n.extract --update`` adds what the source marks):

- ``_("signed {file}", file=f)``: the message in the current language, then its fields filled;
- ``ngettext("{n} message", "{n} messages", n)``: the same with a count (``n`` is a field);
- ``N_("...")``: marks a message translated later, where it is shown (an error's sentence, a
  constant); returns it unchanged (``N_plural`` the same for a message with a count).

The ``.po`` files are read at first use and compiled in memory by Babel: there is no ``.mo`` to
build at install or to go stale after an edit.  The language is per context (``use``): the CLI
sets it once from ``--lang`` or ``LIENTHONG_LANG``; a web page per request, from ``negotiate``.
"""

from __future__ import annotations

import gettext
import io
from contextvars import ContextVar
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

DOMAIN = "lienthong"
LANGUAGES = ("vi", "en")
DEFAULT = "vi"
LOCALE_DIR = Path(__file__).with_name("locale")


def N_(message: str) -> str:
    """Mark ``message`` for translation where it is shown; returns it unchanged."""
    return message


def N_plural(singular: str, plural: str) -> tuple[str, str]:
    """Mark a message with a count, translated where it is shown (``ngettext``); returns both forms."""
    return singular, plural


def po_file(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


class Catalogue:
    """The messages of one language, with the numbers and days written as its readers write them."""

    def __init__(self, lang: str, translations: gettext.NullTranslations) -> None:
        self.lang = lang
        self._t = translations

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def __call__(self, message: str, **fields: Any) -> str:
        """``message`` translated, its ``{fields}`` filled."""
        text = self._t.gettext(message)
        return text.format(**fields) if fields else text

    def plural(self, singular: str, plural: str, n: int, **fields: Any) -> str:
        return self._t.ngettext(singular, plural, n).format(n=self.number(n), **fields)

    def number(self, n: float) -> str:
        """A count as the language groups digits (12.345 in Vietnamese, 12,345 in English)."""
        from babel.numbers import format_decimal

        return str(format_decimal(n, locale=self.lang))

    def percent(self, share: float | None) -> str:
        """A share as a percentage (``-`` when there is none)."""
        if share is None:
            return "-"
        from babel.numbers import format_percent

        return str(format_percent(share, "#,##0.#%", locale=self.lang))

    def day(self, d: date) -> str:
        """A day as the language writes it (01/11/2026 in Vietnamese, 2026-11-01 in English)."""
        return self(N_("{day:%Y-%m-%d}"), day=d)


@cache
def catalogue(lang: str) -> Catalogue:
    """The catalogue of ``lang`` (one of :data:`LANGUAGES`), read from its ``.po`` file once."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    if lang not in LANGUAGES:
        raise ValueError(f"no catalogue for language {lang!r}")
    with po_file(lang).open("rb") as f:
        parsed = read_po(f, locale=lang, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, parsed)
    compiled.seek(0)
    return Catalogue(lang, gettext.GNUTranslations(compiled))


def parse(name: str | None) -> str | None:
    """The language a name means (``vi``, ``vi_VN``, ``en-US``, ``EN``...), or None if not one we have."""
    if not name:
        return None
    base = name.strip().replace("_", "-").split("-")[0].split(".")[0].lower()
    return base if base in LANGUAGES else None


def negotiate(accept_language: str | None, default: str = DEFAULT) -> str:
    """The language a browser's ``Accept-Language`` prefers among ours (RFC 9110 weights);
    ``default`` (Vietnamese) when it names neither."""
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        ranked.append((-weight, n, tag.strip()))
    for neg_weight, _n, tag in sorted(ranked):
        if neg_weight < 0 and (tag == "*" or parse(tag)):
            return parse(tag) or default
    return default


_current: ContextVar[str] = ContextVar("lienthong_language", default=DEFAULT)


def use(lang: str) -> None:
    """Speak ``lang`` in this context from now on (a thread or task started later inherits it)."""
    if lang not in LANGUAGES:
        raise ValueError(f"no catalogue for language {lang!r}")
    _current.set(lang)


def language() -> str:
    return _current.get()


def current() -> Catalogue:
    return catalogue(_current.get())


def _(message: str, **fields: Any) -> str:
    """``message`` in the current language, its ``{fields}`` filled."""
    return current()(message, **fields)


def ngettext(singular: str, plural: str, n: int, **fields: Any) -> str:
    """The form of ``singular``/``plural`` for ``n`` in the current language, ``{n}`` and ``fields`` filled."""
    return current().plural(singular, plural, n, **fields)
