"""Error types and their exit codes, defined once for the whole project.

These are plain exceptions: the library (simulator, registry, storage, training, collection) raises
them without knowing about any command line. The CLI's top-level group (`slatectl.cli.app`) maps them to
exit codes and prints one line on stderr; a traceback appears only with `--debug` / `SLATECTL_DEBUG=1`.

`BadInput` means the user asked for something that cannot be done as asked (unknown env, bad id,
invalid config, corrupted file): exit 2. `JobFailed` means the job itself ran and failed: exit 1.
"""

from __future__ import annotations


class SlatectlError(Exception):
    """Base of every error slatectl reports to a user; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(SlatectlError):
    """Bad usage or bad input: unknown names, invalid values, corrupted or missing files."""

    exit_code = 2


class JobFailed(SlatectlError):
    """The job started and failed for a reason that is not the user's input."""

    exit_code = 1
