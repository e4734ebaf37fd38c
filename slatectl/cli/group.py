"""The top-level command group: the one place where errors become exit codes and messages.

Library code raises `slatectl.errors.SlatectlError` subclasses (plain exceptions carrying an exit code);
anything else that escapes a command is a bug or an environment failure (disk full, permissions) and is
reported in one line with exit 1. Tracebacks are printed only when the resolved settings say `debug`
(`--debug` or `SLATECTL_DEBUG=1`). Click's own exceptions (usage errors, `Exit`, `Abort`) pass through
unchanged so Typer keeps handling them.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer.core import TyperGroup

from slatectl.cli.common import get_settings
from slatectl.errors import SlatectlError

# Typer vendors click (typer._click in recent releases); the classes are reached through Typer's API.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH = (_ClickException, typer.Exit, typer.Abort)


def report_error(exc: BaseException) -> int:
    """Print `exc` the way the CLI contract says and return the exit code to use."""
    if get_settings().debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, SlatectlError):
        typer.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    detail = str(exc) or type(exc).__name__
    typer.echo(f"error: unexpected {type(exc).__name__}: {detail} (rerun with --debug for the traceback)", err=True)
    return 1


class SlatectlGroup(TyperGroup):
    """Typer's group with slatectl's error mapping around every subcommand."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's single boundary for errors
            raise typer.Exit(report_error(exc)) from exc
