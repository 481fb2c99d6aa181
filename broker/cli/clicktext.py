"""click's own sentences (usage, help headings, its refusals of bad arguments) in the reader's
language.

click marks them with the standard library's ``gettext``, which its modules bind as ``_`` and
``ngettext`` when imported; ``route`` points those names at lienthong's catalogues, and the
messages below are the ones a user of ``lienthong`` can meet, marked here so that the catalogues
carry them.  Others click may add stay in English.
"""

from __future__ import annotations

import gettext
import sys

from broker import i18n
from broker.i18n import N_, N_plural

MESSAGES = (
    N_("Usage:"), N_("Options"), N_("Commands"), N_("Positional arguments"), N_("Aborted!"),
    N_("Show this message and exit."),
    N_("Error: {message}"), N_("Try '{command} {option}' for help."), N_("Missing command."),
    N_("Invalid value: {message}"), N_("Invalid value for {param_hint}: {message}"),
    N_("Missing argument"), N_("Missing option"), N_("Missing parameter"), N_("Missing {param_type}"),
    N_("Missing parameter: {param_name}"), N_("No such option {name!r}."), N_("No such command {name!r}."),
    N_("unknown error"), N_("Could not open file {filename!r}: {message}"),
    N_("Option {name!r} does not take a value."), N_("Argument {name!r} takes {nargs} values."),
    N_("default: {default}"), N_("required"), N_("env var: {var}"), N_("(dynamic)"), N_("deprecated"),
    N_("Choice({choices})"), N_("{value!r} is not a valid {number_type}."),
    N_("{value} is not in the range {range}."), N_("{value!r} is not a valid boolean. Recognized values: {states}"),
    N_("{value!r} is not a valid UUID."), N_("file"), N_("directory"), N_("path"),
    N_("{name} {filename!r} does not exist."), N_("{name} {filename!r} is a file."),
    N_("{name} {filename!r} is a directory."), N_("{name} {filename!r} is not readable."),
    N_("{name} {filename!r} is not writable."), N_("{name} {filename!r} is not executable."),
    N_("Do you want to continue?"), N_("Confirm the action without prompting."),
    N_plural("Got unexpected extra argument ({args})", "Got unexpected extra arguments ({args})"),
    N_plural("Did you mean {possibility}?", "(Did you mean one of: {possibilities}?)"),
    N_plural("Option {name!r} requires an argument.", "Option {name!r} requires {nargs} arguments."),
    N_plural("{value!r} is not {choice}.", "{value!r} is not one of {choices}."),
    N_plural("Takes {nargs} values but 1 was given.", "Takes {nargs} values but {len} were given."),
)


def _gettext(message: str) -> str:
    return i18n.current().gettext(message)


def _ngettext(singular: str, plural: str, n: int) -> str:
    return i18n.current().ngettext(singular, plural, n)


def route() -> None:
    """Make every loaded click module look its sentences up in lienthong's current catalogue."""
    for name, module in list(sys.modules.items()):
        if name == "click" or name.startswith("click."):
            if getattr(module, "_", None) is gettext.gettext:
                module._ = _gettext  # type: ignore[attr-defined]
            if getattr(module, "ngettext", None) is gettext.ngettext:
                module.ngettext = _ngettext  # type: ignore[attr-defined]
