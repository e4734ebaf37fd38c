"""The top-level command group: lazy subcommands, and the one place where errors become exit codes.

Lazy subcommands (click's documented "LazyGroup" pattern, on Typer's group class): the top-level app
lists each command as a name, a "module:attribute" and a one-line help. A command's module is imported
only when that command runs, its own `--help` is asked for, or completion needs its options, so
`slatectl --help`, `--version`, `env list` and the registry commands never import torch or Lightning.

Errors: library code raises `slatectl.errors.SlatectlError` subclasses (plain exceptions carrying an
exit code); anything else that escapes a command is a bug or an environment failure (disk full,
permissions) and is reported in one line with exit 1. Ctrl-C prints one line and exits 130 (the shell's
128 + SIGINT); SIGTERM and SIGHUP arrive as `StopSignal` (installed by `slatectl.cli.main`) and exit
128 + their number. Tracebacks are printed only when the resolved settings say `debug` (`--debug` or
`SLATECTL_DEBUG=1`). Click's own exceptions (usage errors, `Exit`, `Abort`) pass through unchanged so
Typer keeps handling them.
"""

from __future__ import annotations

import gc
import importlib
import sys
import traceback
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Mapping

import typer
import typer.main
from typer._click.shell_completion import CompletionItem  # Typer vendors click; no public alias
from typer.core import TyperGroup
from typer.models import CommandInfo, TyperInfo

from slatectl.cli.common import get_settings
from slatectl.errors import SlatectlError, StopSignal

# Typer vendors click (typer._click in recent releases); the classes are reached through Typer's API.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_PASS_THROUGH = (_ClickException, typer.Exit, typer.Abort)

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a Ctrl-C'd program

# Typer checks choices (enums) with pydantic, whose messages start with the error type ("Value error,
# 'x' is not one of ..."): noise in front of the sentence a person reads.
_PYDANTIC_PREFIXES = ("Value error, ",)


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand lives ("package.module:attribute", a Typer app or a command function) and
    the one line shown for it in `slatectl --help` without importing it."""

    target: str
    help: str

    def load(self, name: str) -> Any:
        module_name, attribute = self.target.split(":")
        # Importing a command module creates hundreds of thousands of long-lived objects (SQLAlchemy
        # and pydantic classes); garbage collections triggered during that find nothing to free and cost
        # ~15 % of a registry command's start-up. Collect nothing while importing, then move what was
        # imported out of later collections (it lives as long as the process).
        gc.disable()
        try:
            module = importlib.import_module(module_name)
        finally:
            gc.freeze()
            gc.enable()
        obj = getattr(module, attribute)
        # Plain help and errors everywhere (the CLI contract), whatever the sub-app was created with.
        if isinstance(obj, typer.Typer):
            command = typer.main.get_group_from_info(TyperInfo(obj), pretty_exceptions_short=True,
                                                     rich_markup_mode=None, suggest_commands=True)
        else:
            command = typer.main.get_command_from_info(CommandInfo(name=name, callback=obj),
                                                       pretty_exceptions_short=True, rich_markup_mode=None)
        command.name = name
        command.short_help = self.help  # the listing and the loaded command say the same thing
        return command


def report_error(exc: BaseException) -> int:
    """Print `exc` the way the CLI contract says and return the exit code to use."""
    if get_settings().debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, SlatectlError):
        typer.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    if isinstance(exc, StopSignal):
        typer.echo(f"error: stopped by {exc.signal_name}; anything already registered is kept.", err=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        typer.echo("error: interrupted (Ctrl-C); anything already registered is kept.", err=True)
        return INTERRUPTED_EXIT_CODE
    detail = str(exc) or type(exc).__name__
    typer.echo(f"error: unexpected {type(exc).__name__}: {detail} (rerun with --debug for the traceback)", err=True)
    return 1


class SlatectlGroup(TyperGroup):
    """Typer's group with slatectl's error mapping around every subcommand and lazily imported commands.

    Subclasses set `lazy_commands` (name -> LazyCommand); eagerly added commands work as in Typer.
    """

    lazy_commands: Mapping[str, LazyCommand] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, Any] = {}

    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self.lazy_commands if n not in self.commands)]

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy_commands:
            return command
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = self.lazy_commands[cmd_name].load(cmd_name)
        return self._loaded[cmd_name]

    def _short_help(self, name: str, limit: int = 45) -> str | None:
        """One-line help of a command without importing it (None for an eagerly added hidden command)."""
        if name in self.lazy_commands and name not in self.commands:
            return self.lazy_commands[name].help
        command = self.commands.get(name)
        return None if command is None or command.hidden else command.get_short_help_str(limit)

    def format_commands(self, ctx, formatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(name, help_text) for name in names if (help_text := self._short_help(name, limit)) is not None]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx, incomplete: str):
        items = [CompletionItem(name, help=self._short_help(name))
                 for name in self.list_commands(ctx) if name.startswith(incomplete) and self._short_help(name) is not None]
        # Options of the group itself (--home, --debug, ...), as Typer would add them.
        items.extend(super(TyperGroup, self).shell_complete(ctx, incomplete))
        return items

    def resolve_command(self, ctx, args: list[str]):
        try:
            return self._click_resolve_command(ctx, args)
        except _UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _ClickException as exc:
            for prefix in _PYDANTIC_PREFIXES:
                exc.message = exc.message.removeprefix(prefix)
            raise
        except _PASS_THROUGH:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI's single boundary for errors
            raise typer.Exit(report_error(exc)) from exc
