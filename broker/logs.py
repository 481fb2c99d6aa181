"""Logging: structlog, configured once by the entry point.

Context (``document_id``, ``hub``, ``agency``) is bound with contextvars so
every line a hub writes while handling a message carries it.  Output is JSON
lines (for log shippers) or a console renderer for people.
"""

from __future__ import annotations

import logging
import sys

import structlog

_TAPS: list[structlog.types.Processor] = []


def _tap(logger: object, method: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    for tap in _TAPS:
        tap(logger, method, event)
    return event


def add_tap(tap: structlog.types.Processor) -> None:
    """Let ``tap`` see every log event (before it is rendered) from now on, loggers already made
    included: a hub process counts its ``alert`` events this way (:mod:`broker.relay.metrics`)."""
    _TAPS.append(tap)


def configure(*, json: bool = False, level: str = "INFO") -> None:
    """Configure structlog and the standard library root logger (call once, at start-up)."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _tap,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr)
    # pika logs every connection step at INFO and each failed connection attempt as an ERROR with a
    # traceback; lienthong reports lost and refused connections itself (one line, with the reason)
    logging.getLogger("pika").setLevel(logging.CRITICAL)


get_logger = structlog.get_logger
