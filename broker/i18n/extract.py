"""What the source marks for translation, and the catalogues kept in step with it (Babel).

Marked are: the first argument of ``_`` and ``N_``, both of ``ngettext`` and ``N_plural`` (Babel's Python
extractor), and two kinds of text marked by where they are: the help of the ``lienthong``
command, which click takes from the docstring of every function made a command or group and from
every ``help=`` of an option, argument, command or group; and the meaning of each error code, the
docstring of each class that sets a ``code`` (``lienthong errors``).

    python -m broker.i18n.extract            # list what is missing or wrong; exit 1 if anything
    python -m broker.i18n.extract --update   # add new messages to the catalogues, drop unused ones

A new message arrives in ``vi`` with an empty translation (to write) and in ``en`` as itself.
"""

from __future__ import annotations

import ast
import inspect
import string
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract
from babel.messages.pofile import read_po, write_po

from broker.i18n import DOMAIN, LANGUAGES, po_file

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("broker", "adapters")
KEYWORDS: dict[str, tuple[int, ...] | None] = {"_": None, "N_": None, "ngettext": (1, 2), "N_plural": (1, 2)}
CLICK_CALLS = {"option", "argument", "command", "group", "version_option", "password_option", "Option"}

Message = str | tuple[str, str]


def _click_help(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Docstrings of command functions and ``help=`` texts, as click will show them, and the
    docstrings of error classes (the meaning of their code)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr in ("command", "group")
                for d in node.decorator_list):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.lineno, inspect.cleandoc(doc)
        if isinstance(node, ast.ClassDef) and any(
                isinstance(s, ast.Assign) and any(getattr(t, "id", "") == "code" for t in s.targets)
                and isinstance(s.value, ast.Constant) for s in node.body):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.lineno, inspect.cleandoc(doc)
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for kw in node.keywords if name in CLICK_CALLS else ():
                if kw.arg == "help" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                    yield kw.value.lineno, inspect.cleandoc(kw.value.value)


def hidden(root: Path = ROOT) -> list[str]:
    """Marks the extractor cannot see: a call of ``_``, ``N_``, ``ngettext`` inside an f-string."""
    out = []
    for folder in SOURCES:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.JoinedStr):
                    for inner in ast.walk(node):
                        if isinstance(inner, ast.Call) and getattr(inner.func, "id", "") in KEYWORDS:
                            out.append(f"{path.relative_to(root).as_posix()}:{inner.lineno}: a message marked inside "
                                       "an f-string is not extracted: mark it outside")
    return out


ERROR_ROOTS = ("LienthongError", "TokenError")
"""The errors whose sentence a person reads: lienthong's own, and the token's (``broker.pkcs11``),
which the relay turns into them.  Their subclasses are found in the source."""
EXEMPT = "# untranslated:"
"""A comment on a line of an error's call that exempts its sentence from marking; the reason follows."""


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _error_classes(trees: list[ast.Module]) -> set[str]:
    """The names of :data:`ERROR_ROOTS` and of every class of the source derived from them."""
    names, grew = set(ERROR_ROOTS), True
    while grew:
        grew = False
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in names and \
                        any(_name(b) in names for b in node.bases):
                    names.add(node.name)
                    grew = True
    return names


def _written_out(node: ast.expr) -> bool:
    """Whether an error's sentence is written here but not marked: a literal, an f-string, text
    joined or formatted from them (``+``, ``%``, ``.format``), or a mark the extractor cannot read
    (``N_(f"...")``)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _written_out(node.left) or _written_out(node.right)
    if isinstance(node, ast.Call):
        if _name(node.func) in KEYWORDS:
            return not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))
        return isinstance(node.func, ast.Attribute) and node.func.attr == "format" and _written_out(node.func.value)
    return False


def unmarked_errors(root: Path = ROOT) -> list[str]:
    """Errors made with a sentence that is not marked for translation (so a reader would get it in
    English): ``raise UsageError(f"cannot read {path}")`` instead of ``raise UsageError(N_("cannot
    read {path}"), path=path)``.  A call with ``# untranslated: <reason>`` on one of its lines is
    exempt; the same comment without a reason is reported."""
    files = {path: path.read_text(encoding="utf-8")
             for folder in SOURCES for path in sorted((root / folder).rglob("*.py"))}
    trees = {path: ast.parse(text) for path, text in files.items()}
    classes = _error_classes(list(trees.values()))
    out: list[tuple[str, int, str]] = []
    for path, tree in trees.items():
        lines = files[path].splitlines()
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _name(node.func) in classes):
                continue
            sentence = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "message"), None)
            if sentence is None or not _written_out(sentence):
                continue
            where = path.relative_to(root).as_posix()
            notes = [line.split(EXEMPT, 1)[1].strip() for line in lines[node.lineno - 1:node.end_lineno or node.lineno]
                     if EXEMPT in line]
            if not notes:
                out.append((where, node.lineno, f"{_name(node.func)}'s sentence is not marked for translation: "
                                                 "N_(\"... {field} ...\"), field=value"))
            elif not all(notes):
                out.append((where, node.lineno, f"'{EXEMPT}' needs a reason"))
    return [f"{where}:{line}: {what}" for where, line, what in sorted(out)]


def messages(root: Path = ROOT) -> dict[Message, list[tuple[str, int]]]:
    """Every message the source marks, with where (file, line)."""
    found: dict[Message, list[tuple[str, int]]] = {}
    for folder in SOURCES:
        for path in sorted((root / folder).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            with path.open("rb") as f:
                for lineno, msg, _comments, _context in extract("python", f, keywords=KEYWORDS):
                    key: Message = msg if isinstance(msg, str) else (str(msg[0]), str(msg[1]))
                    found.setdefault(key, []).append((where, lineno))
            for lineno, text in _click_help(ast.parse(path.read_text(encoding="utf-8"))):
                found.setdefault(text, []).append((where, lineno))
    return found


def template(root: Path = ROOT) -> Catalog:
    cat = Catalog(domain=DOMAIN, project="lienthong", fuzzy=False)
    for msg, places in sorted(messages(root).items(), key=lambda kv: str(kv[0])):
        cat.add(msg, locations=places)
    return cat


def load(lang: str) -> Catalog:
    with po_file(lang).open("rb") as f:
        return read_po(f, locale=lang, domain=DOMAIN)


def _fields(text: str) -> set[str]:
    """The names of ``{fields}`` in a format string (without conversions or format specs)."""
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError:
        return {"<not a format string>"}


def _strings(string: object) -> list[str]:
    """A catalogue entry's translation(s) as a list (a message with a count has one per form)."""
    if isinstance(string, str):
        return [string]
    return [str(s or "") for s in string] if isinstance(string, (tuple, list)) else [""]


def problems(root: Path = ROOT) -> list[str]:
    """What keeps the catalogues from speaking for the source: a marked message missing in a
    language, untranslated, fuzzy, with other ``{fields}``, not NFC, or no longer marked."""
    marked = messages(root)
    ids = {m if isinstance(m, str) else m[0]: m for m in marked}
    out: list[str] = hidden(root) + unmarked_errors(root)
    for lang in LANGUAGES:
        raw = po_file(lang).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append(f"{lang}: {po_file(lang)} is not UTF-8 ({exc})")
            continue
        if unicodedata.normalize("NFC", text) != text:
            out.append(f"{lang}: {po_file(lang)} is not in Unicode NFC")
        cat = load(lang)
        for msgid, msg in ids.items():
            entry = cat.get(msgid)
            where = "{}:{}".format(*marked[msg][0])
            if entry is None:
                out.append(f"{lang}: missing {msgid!r} ({where})")
                continue
            strings = _strings(entry.string)
            if entry.fuzzy or not all(strings):
                out.append(f"{lang}: {'fuzzy' if entry.fuzzy else 'untranslated'} {msgid!r} ({where})")
            # a translation fills the fields of its source (the forms of a count may each use some)
            allowed = set().union(*(_fields(s) for s in ([msg] if isinstance(msg, str) else msg)))
            if any((_fields(s) != allowed) if isinstance(msg, str) else not _fields(s) <= allowed
                   for s in strings if s):
                out.append(f"{lang}: other {{fields}} in the translation of {msgid!r}")
        for entry in cat:
            key = entry.id if isinstance(entry.id, str) else entry.id[0]
            if key and key not in ids:
                out.append(f"{lang}: {key!r} is no longer marked in the source (run --update)")
    return out


def update(root: Path = ROOT) -> None:
    """Bring each catalogue in step with the source, keeping every translation written."""
    tmpl = template(root)
    for lang in LANGUAGES:
        cat = load(lang)
        cat.update(tmpl, no_fuzzy_matching=lang == "en", update_creation_date=False)  # English is the source
        for entry in cat:
            if lang == "en" and entry.id and not entry.fuzzy and not all(_strings(entry.string)):
                entry.string = entry.id if isinstance(entry.id, str) else (entry.id[0], entry.id[1])
        with po_file(lang).open("wb") as f:
            write_po(f, cat, width=100, ignore_obsolete=True, include_lineno=False, sort_output=True)


def main(argv: list[str]) -> int:
    if "--update" in argv:
        update()
    found = problems()
    for p in found:
        print(p)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
