"""The ``lienthong`` group: one line and an exit code for every error, the reader's language,
shared helpers.

Every command exits 0 when all is well.  A refusal prints one line
``ERROR <CODE>: <sentence>`` on stderr (codes: ``lienthong errors`` and
docs/errors.md) and exits 1 (message rejected) or 2 (usage/configuration);
an unexpected failure prints ``ERROR INTERNAL: ...`` and exits 70.
Never a traceback, unless ``--debug`` asks for one.

Everything printed, help included, is in Vietnamese unless ``--lang en`` (on the group or any
command) or ``LIENTHONG_LANG=en`` asks for English; codes are never translated.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from broker import __version__, i18n, logs
from broker.cli import clicktext
from broker.core import errors
from broker.core.topology import Topology
from broker.i18n import N_, _
from broker.relay.assemble import topology_in_force
from broker.settings import Settings

EXIT_REJECTED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 70


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise errors.UsageError(N_("cannot read {path}: {reason}"), path=path, reason=exc.strerror) from None


def settings(topology: str | None = None) -> Settings:
    """The deployment's settings, from the environment (read here, once per command); ``topology``
    is a ``--topology`` flag's value (the first place of the search, see ``broker.settings``)."""
    return Settings.from_env(topology=topology)


def topology_file(s: Settings) -> Path:
    """The topology file the settings found; if none, CONFIG naming every place looked."""
    if not s.topology.is_file():
        raise errors.ConfigError(N_("no topology file found; looked at: {places}"),
                                 places="; ".join(s.topology_searched) or str(s.topology))
    return s.topology


def load_topology(s: Settings) -> Topology:
    """The topology in force here (the newest directory this host's hubs run on, else the topology
    file the settings found); if there is no file, CONFIG naming every place looked."""
    topology_file(s)
    return topology_in_force(s)


def _fail(exc: errors.LienthongError) -> NoReturn:
    click.echo(exc.line(i18n.current().gettext), err=True)
    sys.exit(EXIT_REJECTED if isinstance(exc, errors.RejectedInput) else EXIT_USAGE)


def _set_language(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        i18n.use(value)


def _lang_option() -> click.Option:
    return click.Option(["--lang"], type=click.Choice(i18n.LANGUAGES), is_eager=True, expose_value=False,
                        callback=_set_language,
                        help="Language of what is printed: vi (the default) or en; also LIENTHONG_LANG.")


@contextmanager
def _translated(*items: Any) -> Iterator[None]:
    """Show the help of these commands and parameters in the current language while inside."""
    saved = [(item, item.help) for item in items if isinstance(getattr(item, "help", None), str)]
    try:
        for item, text in saved:
            item.help = i18n.current().gettext(inspect.cleandoc(text))
        yield
    finally:
        for item, text in saved:
            item.help = text


class Command(click.Command):
    """A command whose help is shown in the reader's language, and which takes ``--lang``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_lang_option())

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated(self, *self.get_params(ctx)):
            super().format_help(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        with _translated(self):
            return super().get_short_help_str(limit)


class Group(Command, click.Group):
    """A group of such commands: they, and its subgroups, are made as these classes."""

    command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        """Turns every error into one line and an exit code."""
        try:
            return super().invoke(ctx)
        except errors.LienthongError as exc:
            _fail(exc)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if ctx.obj and ctx.obj.get("debug"):
                raise
            logs.get_logger().error("internal error", error=repr(exc))
            click.echo(_("ERROR INTERNAL: unexpected {kind}: {error}", kind=type(exc).__name__, error=exc),
                       err=True)
            sys.exit(EXIT_INTERNAL)


Group.group_class = Group  # its subgroups are of its class


class Lienthong(Group):
    """The ``lienthong`` command itself: chooses the language, and turns click's refusals of bad
    arguments into ``ERROR USAGE`` lines."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        clicktext.route()
        wanted = os.environ.get("LIENTHONG_LANG", "")
        lang = i18n.parse(wanted) if wanted else i18n.DEFAULT
        if lang is None:
            sentence = _("LIENTHONG_LANG={value}: the languages are vi and en", value=wanted)
            click.echo(f"ERROR USAGE: {sentence}", err=True)
            sys.exit(EXIT_USAGE)
        i18n.use(lang)
        try:
            code = super().main(args, prog_name or "lienthong", complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = _("(see {command} --help)", command=exc.ctx.command_path if exc.ctx is not None else "lienthong")
            click.echo(f"ERROR USAGE: {exc.format_message()} {hint}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"ERROR USAGE: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo(_("Aborted!"), err=True)
            sys.exit(EXIT_REJECTED)
        sys.exit(code if isinstance(code, int) else 0)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_("lienthong, version {version}", version=__version__))
        ctx.exit()


@click.group(cls=Lienthong)
@click.option("--version", is_flag=True, is_eager=True, expose_value=False, callback=_version,
              help="Show the version and exit.")
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines.")
@click.option("--log-level", default="INFO", show_default=True, help="Least severity of the logs written.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def main(ctx: click.Context, log_json: bool, log_level: str, debug: bool) -> None:
    """lienthong: relay for official electronic documents (edXML) on RabbitMQ."""
    logs.configure(json=log_json, level=log_level)
    ctx.obj = {"debug": debug}
