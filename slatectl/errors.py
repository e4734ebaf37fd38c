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


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP raised where Ctrl-C would raise KeyboardInterrupt, so that every clean-up that
    runs on Ctrl-C (scratch folders removed, runs marked interrupted) runs for them too. The command
    exits 128 + the signal's number, as a shell reports a program that signal stopped."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name, exit_code)
        self.signal_name = signal_name
        self.exit_code = exit_code


def write_failed(path: object, exc: OSError, outcome: str = "nothing was written or registered") -> JobFailed:
    """The one message for a write the operating system refused (disk full, file-size limit, read-only
    or unwritable folder): exit 1, naming the file, the system's reason and what was left behind."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return JobFailed(f"could not write {path} ({reason}); {outcome}. Free disk space (or fix the folder's "
                     "permissions, or raise `ulimit -f`) and run the command again.")
