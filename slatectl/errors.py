"""Error types and their exit codes.

`BadInput` means the user asked for something that cannot be done as asked (unknown env, bad id,
invalid config, corrupted file): exit 2 with a one-paragraph message. `JobFailed` means the job itself
ran and failed: exit 1. They derive from click's exception so that Typer (and `CliRunner` in tests)
prints the message on stderr and exits with the code, without a traceback unless debugging is on.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

# Typer >= 0.20 vendors click (as typer._click); older releases use the click package. Either way the
# exception class Typer's runner catches is the ClickException base of typer.BadParameter.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def debug_enabled() -> bool:
    return "--debug" in sys.argv or os.environ.get("SLATECTL_DEBUG", "") not in ("", "0", "false", "False")


class SlatectlError(_ClickException):
    exit_code = 1

    def show(self, file=None) -> None:  # noqa: D401 - click's hook
        stream = file if file is not None else sys.stderr
        if debug_enabled():
            traceback.print_exception(self, file=stream)
        stream.write(f"error: {self.message}\n")


class BadInput(SlatectlError):
    """Bad usage or bad input: unknown names, invalid values, corrupted or missing files."""

    exit_code = 2


class JobFailed(SlatectlError):
    """The job started and failed for a reason that is not the user's input."""

    exit_code = 1
