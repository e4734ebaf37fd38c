"""The CLI's single error boundary: an unexpected exception in any command is one line on stderr and
exit 1 (the traceback only with --debug); Ctrl-C is one line and exit 130."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from slatectl.cli import app, env_cmd

runner = CliRunner()


def explode(exc: BaseException):
    def raiser(*_args, **_kwargs):
        raise exc
    return raiser


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), ZeroDivisionError("division by zero"), OSError(28, "No space left on device")])
def test_unexpected_error_is_one_line_and_exit_1(monkeypatch, exc):
    monkeypatch.setattr(env_cmd, "load_env_config", explode(exc))
    result = runner.invoke(app, ["env", "show", "focused_mix"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: unexpected {type(exc).__name__}: ") and "--debug" in lines[0]
    assert str(exc.args[-1]) in lines[0]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(env_cmd, "load_env_config", explode(RuntimeError("disk on fire")))
    result = runner.invoke(app, ["--debug", "env", "show", "focused_mix"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert ", in raiser" in result.stderr  # the frame that raised is shown
    assert result.stderr.strip().splitlines()[-1].startswith("error: unexpected RuntimeError: disk on fire")


def test_debug_from_the_environment(monkeypatch):
    monkeypatch.setattr(env_cmd, "load_env_config", explode(RuntimeError("disk on fire")))
    result = runner.invoke(app, ["env", "show", "focused_mix"], env={"SLATECTL_DEBUG": "1"})
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch):
    monkeypatch.setattr(env_cmd, "load_env_config", explode(KeyboardInterrupt()))
    result = runner.invoke(app, ["env", "list"])
    assert result.exit_code == 130
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], result.stderr
    assert "Aborted" not in result.output and "Traceback" not in result.output


def test_bad_input_keeps_its_exit_2_and_message():
    result = runner.invoke(app, ["env", "show", "nowhere"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown environment") and len(result.stderr.strip().splitlines()) == 1


def test_an_error_while_loading_a_command_module_is_reported_too(monkeypatch):
    # A lazily imported command whose module fails to import (a broken install) is still one line.
    from slatectl.cli import COMMANDS
    from slatectl.cli.group import LazyCommand

    monkeypatch.setitem(COMMANDS, "env", LazyCommand("slatectl.cli.no_such_module:app", "broken"))
    result = runner.invoke(app, ["env", "list"])
    assert result.exit_code == 1
    assert "error: unexpected ModuleNotFoundError" in result.stderr and "Traceback" not in result.output
