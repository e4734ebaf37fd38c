"""Torch threads: 1 per process by default; `--threads N` / SLATECTL_THREADS=N give N per process."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.errors import BadInput
from slatectl.settings import MAX_THREADS, Settings
from slatectl.threads import configure_torch_threads, threads_per_job

runner = CliRunner()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("total, jobs, expected", [(None, 1, 1), (None, 6, 1), (8, 4, 8), (3, 4, 3), (7, 2, 7), (2, 1, 2)])
def test_threads_per_job(total, jobs, expected):
    assert threads_per_job(total, jobs) == expected


def test_configure_sets_torch_and_can_be_called_again(restore_threads):
    assert configure_torch_threads(2) == 2 and torch.get_num_threads() == 2
    # A second call (inter-op already fixed by torch) must not raise and still sets the intra-op count.
    assert configure_torch_threads(None) == 1 and torch.get_num_threads() == 1


def test_settings_read_threads_from_option_and_environment(monkeypatch):
    monkeypatch.setenv("SLATECTL_THREADS", "3")
    assert Settings.resolve().threads == 3
    assert Settings.resolve(threads=5).threads == 5  # the option wins
    monkeypatch.setenv("SLATECTL_THREADS", "")
    assert Settings.resolve().threads is None
    for bad in ("0", "-2", "abc", "1.5", str(MAX_THREADS + 1), "1e23"):
        monkeypatch.setenv("SLATECTL_THREADS", bad)
        with pytest.raises(BadInput, match="SLATECTL_THREADS"):
            Settings.resolve()


def test_rollout_runs_with_the_requested_threads(restore_threads):
    args = ["env", "rollout", "focused_topdown", "--policy", "random", "--episodes", "4", "--json"]
    assert runner.invoke(app, ["--threads", "3", *args]).exit_code == 0
    assert torch.get_num_threads() == 3
    assert runner.invoke(app, args, env={"SLATECTL_THREADS": "2"}).exit_code == 0
    assert torch.get_num_threads() == 2
    assert runner.invoke(app, args, env={"SLATECTL_THREADS": ""}).exit_code == 0
    assert torch.get_num_threads() == 1  # the default: one thread per job


@pytest.mark.parametrize("args, env", [(["--threads", "0"], {}), (["--threads", "100000"], {}), (["--threads", "two"], {}),
                                       ([], {"SLATECTL_THREADS": "0"}), ([], {"SLATECTL_THREADS": "lots"})])
def test_bad_thread_counts_exit_2(args, env):
    result = runner.invoke(app, [*args, "env", "list"], env=env)
    assert result.exit_code == 2, result.output
    assert "threads" in result.output.lower() or "THREADS" in result.output
    assert "Traceback" not in result.output
