"""XSD validation of edXML documents and status messages (schemas/ ship as package data).

Schemas are parsed once per process and shared: lxml's ``XMLSchema`` objects
validate concurrently without state of their own.  ``validate`` returns the
message kind and raises :class:`~broker.core.errors.SchemaViolation` with the
first error, in one sentence without lxml's ``{namespace}`` noise.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

from broker.core.edxml import EDXML_NS, E, Kind, path_of
from broker.core.errors import SchemaViolation, WrongNamespace
from broker.i18n import N_
from schemas import SCHEMA_DIR

_FILES: dict[Kind, str] = {"document": "edxml-document.xsd", "status": "edxml-status.xsd"}
_loaded: dict[Kind, etree.XMLSchema] = {}
_lock = threading.Lock()


def _schema(kind: Kind) -> etree.XMLSchema:
    schema = _loaded.get(kind)
    if schema is None:
        with _lock:
            schema = _loaded.get(kind)
            if schema is None:
                parser = etree.XMLParser(resolve_entities=False, no_network=True)
                doc = etree.parse(str(SCHEMA_DIR / _FILES[kind]), parser)
                schema = _loaded[kind] = etree.XMLSchema(doc)
    return schema


def kind_of(root: etree._Element) -> Kind:
    """``status`` when the MessageHeader has a StatusCode, else ``document``."""
    if root.tag != E + "edXML":
        raise WrongNamespace(N_("root element is {element!r} in namespace {found!r}; expected edXML in {namespace}"),
                             element=etree.QName(root).localname, found=etree.QName(root).namespace or '(none)',
                             namespace=EDXML_NS)
    is_status = bool(path_of(root, "edXMLEnvelope", "edXMLHeader", "MessageHeader", "StatusCode"))
    return "status" if is_status else "document"


_NS_NOISE = re.compile(r"\{[^}]*\}")


def validate(root: etree._Element) -> Kind:
    """Validate a message against its schema; return its kind."""
    kind = kind_of(root)
    schema = _schema(kind)
    if not schema.validate(root):
        err = schema.error_log.last_error if len(schema.error_log) == 1 else schema.error_log[0]
        text = _NS_NOISE.sub("", err.message).replace("Element '", "element '")
        raise SchemaViolation(N_("{kind} does not conform to the edXML schema: {text} (line {line})"), kind=kind,
                              text=text, line=err.line)
    return kind
