"""Torch threads: by default the available cores ÷ the jobs running at once (at least 1); `--threads N` /
SLATECTL_THREADS=N give N per process; the CLI entry asks OpenMP to let idle threads sleep (PASSIVE)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.errors import BadInput
from slatectl.settings import MAX_THREADS, Settings
from slatectl.threads import available_cores, configure_torch_threads, threads_per_job

runner = CliRunner()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("total, jobs, cores, expected", [
    (None, 1, 2, 2), (None, 2, 2, 1), (None, 6, 2, 1), (None, 1, 1, 1), (None, 3, 16, 5), (None, 4, 16, 4),
    (8, 4, 2, 8), (3, 4, 16, 3), (7, 2, 2, 7), (2, 1, 64, 2)])
def test_threads_per_job(total, jobs, cores, expected):
    assert threads_per_job(total, jobs, cores) == expected


def test_auto_counts_the_cores_this_process_may_use():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cores() == cores and threads_per_job(None) == cores


def test_configure_sets_torch_and_can_be_called_again(restore_threads):
    assert configure_torch_threads(2) == 2 and torch.get_num_threads() == 2
    # A second call (inter-op already fixed by torch) must not raise and still sets the intra-op count.
    assert configure_torch_threads(1) == 1 and torch.get_num_threads() == 1
    assert configure_torch_threads(None) == available_cores() == torch.get_num_threads()


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
    assert torch.get_num_threads() == available_cores()  # the default: every core for the one job


@pytest.mark.parametrize("args, env", [(["--threads", "0"], {}), (["--threads", "100000"], {}), (["--threads", "two"], {}),
                                       ([], {"SLATECTL_THREADS": "0"}), ([], {"SLATECTL_THREADS": "lots"})])
def test_bad_thread_counts_exit_2(args, env):
    result = runner.invoke(app, [*args, "env", "list"], env=env)
    assert result.exit_code == 2, result.output
    assert "threads" in result.output.lower() or "THREADS" in result.output
    assert "Traceback" not in result.output


# Runs the console-script entry in a fresh interpreter (OpenMP reads its wait policy when torch loads it);
# OMP_DISPLAY_ENV=VERBOSE makes GNU OpenMP print the settings it took, spin count included.
ENTRY = "import sys; from slatectl.cli import main; sys.argv = ['slatectl', *sys.argv[1:]]; main()"


def _openmp_settings(tmp_path, **variables) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", SLATECTL_HOME=str(tmp_path / "home"), **variables)
    completed = subprocess.run([sys.executable, "-c", ENTRY, "--threads", "2", "env", "rollout", "focused_topdown",
                                "--policy", "random", "--episodes", "2", "--json"],
                               capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in completed.stderr:
        pytest.skip("this torch build's OpenMP does not report its settings (not GNU OpenMP)")
    return completed.stderr


def test_the_cli_entry_makes_idle_openmp_threads_sleep(tmp_path):
    settings = _openmp_settings(tmp_path)
    # PASSIVE took effect: no spinning at all (unset, GNU OpenMP spins 300,000 rounds before sleeping)
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in settings and "GOMP_SPINCOUNT = '0'" in settings


def test_a_wait_policy_the_user_exported_is_kept(tmp_path):
    settings = _openmp_settings(tmp_path, OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in settings and "GOMP_SPINCOUNT = '0'" not in settings


def test_parallel_runs_share_the_cores_among_the_runs_that_run_at_once(monkeypatch, sqlite_settings):
    """`--jobs 4` with two runs: each worker is told 2 jobs run at once (not 4), so auto gives each
    cores ÷ 2 threads."""
    from concurrent.futures import Future

    from slatectl.train import orchestration

    told = []

    class InlinePool:  # stands in for the process pool: records what each worker is given
        def __init__(self, max_workers):
            self.max_workers = max_workers

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, function, settings, config, command, jobs, label):
            told.append((label, jobs))
            future = Future()
            future.set_result(label)
            return future

    monkeypatch.setattr(orchestration, "ProcessPoolExecutor", InlinePool)
    configs = orchestration.resolve_run_configs("slateq", ["focused_topdown", "focused_mix"])
    assert list(orchestration.train_runs(sqlite_settings, configs, "test", jobs=4)) == [
        "slateq/focused_topdown", "slateq/focused_mix"]
    assert told == [("slateq/focused_topdown", 2), ("slateq/focused_mix", 2)]
    assert threads_per_job(None, 2, cores=2) == 1 and threads_per_job(None, 2, cores=8) == 4
