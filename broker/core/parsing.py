"""Hardened XML parsing: the only place lienthong turns bytes into a tree.

Refused, whatever the input says: DTDs (internal or external), entity
declarations and references, XInclude, network access, processing of
anything outside the bytes given.  Bounded: size in bytes and depth of
element nesting, both from :class:`ParseLimits`.

lxml (libxml2) with ``resolve_entities=False`` never expands entities and
``no_network=True`` never fetches; we go further and reject any document
that *declares* a DTD at all, because legitimate edXML never does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lxml import etree

from broker.core.errors import ForbiddenXML, MalformedXML, TooDeep, TooLarge
from broker.i18n import N_


@dataclass(frozen=True)
class ParseLimits:
    """Bounds applied to every message before and while it is parsed."""

    max_bytes: int = 50 * 1024 * 1024
    """Largest message accepted, in bytes (edXML carries base64 attachments)."""

    max_depth: int = 64
    """Deepest element nesting accepted; real edXML stays under 12."""


DEFAULT_LIMITS = ParseLimits()

XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
_XINCLUDE = "{" + XINCLUDE_NS + "}*"


def _declares(data: bytes) -> bool:
    """Whether ``data`` holds ``<!DOCTYPE`` or ``<!ENTITY``: one scan for ``<!`` (comments and
    CDATA sections are the only other markup that starts so), not one per keyword."""
    at = data.find(b"<!")
    while at >= 0:
        if data.startswith((b"DOCTYPE", b"ENTITY"), at + 2):
            return True
        at = data.find(b"<!", at + 2)
    return False


_local = threading.local()


def _parser() -> etree.XMLParser:
    """One parser per thread (lxml parsers must not be shared between threads)."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=True,  # large base64 text nodes; size is bounded by max_bytes
            remove_blank_text=False,
            remove_comments=False,
            remove_pis=False,
            collect_ids=False,
        )
    return parser


def text_of(el: etree._Element) -> str:
    """The text an element holds as its signature covers it: every text node of the element and
    its descendants, joined, and nothing of comments or processing instructions.

    Exclusive canonicalisation without comments (the signature profile) drops comments, so
    anyone on the path may add one without breaking the signature: ``DOC<!---->-1`` verifies as
    ``DOC-1``.  lxml's ``.text`` stops at the first comment and would read ``DOC``.  Reading
    the text nodes (XPath's string-value) reads exactly what was signed, whatever comments were
    added; a processing instruction is signed but carries no text, so it is left out too.  We
    read rather than refuse comments: the national axis' own samples carry them."""
    if not len(el):  # no child nodes (comments and PIs are children in lxml): the text is all there is
        return el.text or ""
    return "".join(el.itertext())


Children = dict[str, list[etree._Element]]


def children(el: etree._Element) -> Children:
    """``el``'s child elements by tag, in document order.  Reading a message or a receipt takes a
    dozen fields from a few elements: one walk over each, then dictionary lookups, instead of a
    ``find`` (a walk of the children, and a path to parse) per field."""
    kids: Children = {}
    for c in el.iterchildren(etree.Element):  # elements only: comments and PIs are left out in C
        tag = c.tag  # built anew at each read: read once
        found = kids.get(tag)
        if found is None:
            kids[tag] = [c]
        else:
            found.append(c)
    return kids


def parse(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> etree._ElementTree:
    """Parse untrusted bytes into a tree, or raise a :class:`RejectedInput`.

    The returned tree keeps every byte of meaning (comments, whitespace,
    prefixes) so that canonicalisation reproduces what the sender signed.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse() takes bytes")
    if len(data) > limits.max_bytes:
        raise TooLarge(N_("message is {n} bytes; the limit is {max_bytes} bytes"), n=len(data),
                       max_bytes=limits.max_bytes)
    if len(data) == 0:
        raise MalformedXML(N_("message is empty"))
    data = bytes(data)
    # Legitimate edXML never carries a DTD; refuse before libxml2 sees one.
    # (A DOCTYPE can only stand in the prolog, but a long comment can push it
    # far: scan everything, it costs microseconds.)
    if _declares(data):
        raise ForbiddenXML(N_("document type declarations (DTD) and entities are not allowed"))
    try:
        tree = etree.ElementTree(etree.fromstring(data, parser=_parser()))
    except etree.XMLSyntaxError as exc:
        text = _clean(exc)
        if "depth" in text.lower():  # libxml2's own hard limit, beyond ours
            raise TooDeep(N_("elements nest deeper than {max_depth} levels"), max_depth=limits.max_depth) from None
        if "network entity" in text or "failed to load" in text:
            raise ForbiddenXML(N_("external resources are not allowed: {text}"), text=text) from None
        raise MalformedXML(N_("not well-formed XML: {text}"), text=text) from None
    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ForbiddenXML(N_("document type declarations (DTD) and entities are not allowed"))
    _check_tree(tree.getroot(), limits.max_depth)
    return tree


def _check_tree(root: etree._Element, max_depth: int) -> None:
    """Depth bound, no entity references, no XInclude elements; all three walks run in C."""
    # One XPath step per level: matches iff some element sits deeper than max_depth.
    if _too_deep(max_depth)(root):
        raise TooDeep(N_("elements nest deeper than {max_depth} levels"), max_depth=max_depth)
    found = next(root.iter(etree.Entity, _XINCLUDE), None)  # one walk for both
    if found is not None and found.tag is etree.Entity:
        raise ForbiddenXML(N_("entity references are not allowed"))
    if found is not None:
        raise ForbiddenXML(N_("XInclude is not allowed"))


def _too_deep(max_depth: int) -> etree.XPath:
    """A compiled depth probe, per thread like the parser."""
    cache: dict[int, etree.XPath] = _local.__dict__.setdefault("depth_probes", {})
    probe = cache.get(max_depth)
    if probe is None:
        probe = cache[max_depth] = etree.XPath("boolean(/*" + "/*" * max_depth + ")")
    return probe


def _clean(exc: etree.XMLSyntaxError) -> str:
    msg = str(exc.msg or exc).strip()
    line = getattr(exc, "lineno", None)
    return f"{msg} (line {line})" if line and "line" not in msg else msg
