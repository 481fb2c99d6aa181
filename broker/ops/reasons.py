"""Why a message was refused, shown to a person from what was stored when it was refused.

A hub records a refusal's sentence in English, the language of logs, signed receipts and the
wire, in two places a person reads later: the hop record in its audit log (the dashboard's recent
refusals) and the ``lt-reason`` header of the parked copy (the dashboard's parked messages,
``lienthong dlq list/show``).  Both stay as they are: the hop record is signed and hash-chained
(evidence bundles carry it), and ``lt-reason`` is part of the wire contract (docs/wire.md).

So a reader who does not read English gets the meaning of the code stored beside the sentence
(the docstring of its error class, translated as ``lienthong errors`` shows it), followed by the
sentence as recorded, which names the particulars (the agency, the certificate, the date).  A
reader of English gets the recorded sentence alone.  Two other ways were set aside:

- translating the stored sentence by matching it back to its template: a sentence is not a key
  (fields hold colons, quotes and parentheses, so a match can be ambiguous, and a template changed
  since no longer matches), and a wrong match would show words the hub never recorded;
- storing the template and fields beside it: in the hop record, that changes what hubs sign; as
  another header of parked copies, it is a new wire field, and refusals read from the audit logs
  would still be untranslated.
"""

from __future__ import annotations

from functools import cache

from broker import i18n
from broker.core import errors
from broker.i18n import N_, _

RECORDED_IN = "en"
"""The language hubs record refusals in."""


@cache
def _meanings() -> dict[str, str]:
    return dict(errors.codes())


def meaning(code: str) -> str:
    """What ``code`` means, in the current language; empty for a code that is not lienthong's (a
    broker's own dead-letter reason, such as ``delivery_limit``)."""
    doc = _meanings().get(code)
    return i18n.current().gettext(doc) if doc else ""


def explained(code: str) -> bool:
    """Whether the reader is shown the code's meaning beside a recorded sentence."""
    return i18n.language() != RECORDED_IN and bool(meaning(code))


def text(code: str, recorded: str) -> str:
    """One line for a person: the code's meaning in their language, then the sentence as recorded;
    for a reader of English, or a code without a meaning, the recorded sentence alone."""
    if not explained(code):
        return recorded
    return _(N_("{meaning} Recorded: {recorded}"), meaning=meaning(code), recorded=recorded) if recorded \
        else meaning(code)
