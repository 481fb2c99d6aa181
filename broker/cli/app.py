"""The ``lienthong`` group: one line and an exit code for every error, shared helpers.

Every command exits 0 when all is well.  A refusal prints one line
``ERROR <CODE>: <sentence>`` on stderr (codes: ``lienthong errors`` and
docs/errors.md) and exits 1 (message rejected) or 2 (usage/configuration);
an unexpected failure prints ``ERROR INTERNAL: ...`` and exits 70.
Never a traceback, unless ``--debug`` asks for one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from broker import __version__, logs
from broker.core import errors
from broker.settings import Settings

EXIT_REJECTED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 70


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise errors.UsageError(f"cannot read {path}: {exc.strerror}") from None


def settings() -> Settings:
    """The deployment's settings, from the environment (read here, once per command)."""
    return Settings.from_env()


def _fail(exc: errors.LienthongError) -> NoReturn:
    click.echo(exc.line(), err=True)
    sys.exit(EXIT_REJECTED if isinstance(exc, errors.RejectedInput) else EXIT_USAGE)


class _Group(click.Group):
    """Turns every error into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
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
            click.echo(f"ERROR INTERNAL: unexpected {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="lienthong")
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def main(ctx: click.Context, log_json: bool, log_level: str, debug: bool) -> None:
    """lienthong: relay for official electronic documents (edXML) on RabbitMQ."""
    logs.configure(json=log_json, level=log_level)
    ctx.obj = {"debug": debug}

