"""Reliability edges: what slatectl does on a full disk or under a file-size limit, on a read-only home,
on refused resumes, on signals and on odd arguments (each test reproduces a failure seen before its fix)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slatectl.cli import app, train_cmd
from slatectl.errors import BadInput, JobFailed
from slatectl.pretrain.gems_train import GeMSConfig, GeMSMember, train_gems, train_gems_population
from slatectl.pretrain.mf import MFConfig, train_mf
from slatectl.registry import RESUME_STATE_KIND, open_registry
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import RunInterrupted, Trainer
from slatectl.train.population import group_runs
from synthetic_logged import prototype_slates, topic_user_clicks

runner = CliRunner()

FILE_SIZE_LIMIT = 500 * 1024  # bytes: room for the registry, not for a 200-episode dataset


def slatectl_under_file_limit(args: list[str], cwd: Path, limit: int = FILE_SIZE_LIMIT) -> subprocess.CompletedProcess:
    """Run `slatectl ARGS` in a child process whose files may not grow beyond `limit` bytes (`ulimit -f`)."""
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLATECTL_THREADS": "1", "MINARI_DATASETS_PATH": str(cwd / "minari"),
           "COLUMNS": "200"}
    env.pop("SLATECTL_HOME", None), env.pop("SLATECTL_REGISTRY_URL", None)
    return subprocess.run([sys.executable, "-c", "from slatectl.cli import main; main()", "--home", str(cwd / "home"),
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_file_size)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("fmt", ["npz", "minari"])
def test_collect_under_a_file_size_limit_fails_in_one_line_and_leaves_nothing(tmp_path, fmt):
    if fmt == "minari":
        pytest.importorskip("h5py")
    result = slatectl_under_file_limit(["collect", "--quality", "random", "--encoder", "none", "--env", "focused_topdown",
                                        "--episodes", "200", "--format", fmt], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: could not write"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert files_under(tmp_path / "home" / "scratch") == []  # the partial file went with its scratch folder
    # only the random policy's return, computed for the reference scores and registered whole before the
    # dataset was simulated, stays (a complete artifact, listed in the registry)
    kept = files_under(tmp_path / "home" / "artifacts")
    assert all(p.parent.name == "rollout" for p in kept) and files_under(tmp_path / "minari") == []
    with open_registry(home=tmp_path / "home") as registry:
        assert registry.list_datasets() == []
        assert len(registry.list_artifacts(kind="rollout")) == len(kept) <= 1


# -- train --resume: refusals change nothing ------------------------------------------------------------------

SMALL = ["training.random_steps=10", "training.val_every=10", "training.val_episodes=8", "training.test_episodes=8",
         "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50"]


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory) -> Path:
    """A home with one finished 20-step run (checkpoints and a resume state at steps 10 and 20)."""
    home = tmp_path_factory.mktemp("finished") / "home"
    config = resolve_run_config("sac-topk-ideal", "focused_mix", overrides=SMALL,
                                cli_training={"max_steps": 20, "save_every": 10})
    with open_registry(Settings.resolve(home=home)) as registry:
        Trainer(registry, config).run(command="test")[0]
    return home


@pytest.fixture
def home(finished_home, tmp_path) -> Path:
    """A private copy of `finished_home` (tests may damage it)."""
    copy = tmp_path / "home"
    shutil.copytree(finished_home, copy)
    return copy


def _newest_resume_state(registry):
    return max(registry.list_artifacts(kind=RESUME_STATE_KIND), key=lambda a: a.config["step"])


@pytest.mark.parametrize("damage", ["corrupted", "deleted", "unsafe"])
def test_a_refused_resume_leaves_a_finished_run_as_it_was(home, damage):
    with open_registry(home=home) as registry:
        before = registry.list_runs()[0]
        state = _newest_resume_state(registry)
        path = registry.store.path_for(state.storage_key)
    if damage == "corrupted":
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    elif damage == "deleted":
        path.unlink()
    else:  # a pickle that would run code if loaded without weights_only, its size and hash recorded as genuine
        payload = pickle.dumps(os.system)
        path.write_bytes(payload)
        with sqlite3.connect(home / "registry.db") as connection:
            connection.execute("UPDATE artifacts SET size = ?, sha256 = ? WHERE id = ?",
                               (len(payload), hashlib.sha256(payload).hexdigest(), state.id))
        connection.close()
    result = runner.invoke(app, ["--home", str(home), "train", "sac-topk-ideal", "--resume", str(before.id)])
    assert result.exit_code == 2, result.output
    with open_registry(home=home) as registry:
        after = registry.get_run(before.id)
    assert (after.status, after.error, after.finished_at) == ("finished", None, before.finished_at)
    assert (after.pid, after.host, after.heartbeat_at) == (before.pid, before.host, before.heartbeat_at)


def test_an_empty_resume_id_is_bad_input_and_resumes_nothing(home):
    result = runner.invoke(app, ["--home", str(home), "train", "--resume", ""])
    assert result.exit_code == 2 and "--resume" in result.stderr and "empty" in result.stderr
    with open_registry(home=home) as registry:
        with pytest.raises(BadInput, match="group id"):
            group_runs(registry, "")  # the library refuses too: an empty filter matches every run
        assert [r.status for r in registry.list_runs()] == ["finished"]


@pytest.mark.parametrize("extra, named", [(["--keep-resume", "3"], "--keep-resume"),
                                          (["--steps", "50", "--seed", "4"], "--steps, --seed"),
                                          (["--set", "agent.gamma=0.5"], "--set")])
def test_resume_refuses_options_it_would_ignore(home, extra, named):
    result = runner.invoke(app, ["--home", str(home), "train", "--resume", "1", *extra])
    assert result.exit_code == 2 and named in result.stderr, result.output
    with open_registry(home=home) as registry:
        assert registry.get_run(1).status == "finished"


def test_train_needs_an_agent_only_without_resume(tmp_path):
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "train", "--env", "focused_topdown"])
    assert result.exit_code == 2 and "AGENT" in result.stderr
    assert not (tmp_path / "home").exists()  # refused before the registry was opened


def test_resume_without_an_agent_continues_the_run(home):
    with open_registry(home=home) as registry:
        run = registry.list_runs()[0]
        registry.finish_run(run.id, status="interrupted")
    result = runner.invoke(app, ["--home", str(home), "train", "--resume", str(run.id)])
    assert result.exit_code == 0, result.output
    with open_registry(home=home) as registry:
        assert registry.get_run(run.id).status == "finished"


# -- signals: 130 for Ctrl-C, 128 + N for another signal N --------------------------------------------------

@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_an_interrupted_training_exits_128_plus_the_signal(monkeypatch, tmp_path, name, code):
    def stopped(*_args, **_kwargs):
        raise RunInterrupted(f"run 1 stopped by {name}", name)

    monkeypatch.setattr(train_cmd, "train_runs", stopped)
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "train", "sac-topk-ideal", "--env", "focused_mix"])
    assert result.exit_code == code, result.output
    assert pickle.loads(pickle.dumps(RunInterrupted("x", name))).exit_code == code  # from a --jobs worker too


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_collect_cleanly_with_128_plus_n(tmp_path, sig):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLATECTL_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", "from slatectl.cli import main; main()", "--home",
                                str(tmp_path / "home"), "collect", "--quality", "random", "--encoder", "none", "--env", "all",
                                "--episodes", "20000", "--batch", "2000"],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        scratch = tmp_path / "home" / "scratch"
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline and not any(scratch.glob("*")):
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    assert files_under(tmp_path / "home" / "scratch") == []


# -- odd global options and --plot targets --------------------------------------------------------------------

@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:reg?mode=memory&uri=true"])
@pytest.mark.parametrize("command", [
    ["collect", "--quality", "random", "--encoder", "none", "--env", "focused_topdown", "--episodes", "3"],
    ["train", "sac-topk-ideal", "--env", "focused_topdown", "--steps", "2"],
    ["pretrain", "mf", "--env", "focused_topdown"],
    ["data", "logged", "--env", "focused_topdown"],
    ["ckpt", "promote", "--env", "focused_topdown", "--quality", "medium", "--yes"],
])
def test_commands_that_write_refuse_an_in_memory_registry(tmp_path, monkeypatch, url, command):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "--registry-url", url, *command])
    assert result.exit_code == 2 and "in-memory" in result.stderr, result.output
    assert files_under(tmp_path) == []  # no orphan file, no scratch


def test_reading_an_in_memory_registry_is_still_allowed(tmp_path):
    result = runner.invoke(app, ["--home", str(tmp_path / "home"), "--registry-url", "sqlite://", "ckpt", "list"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("option", ["--home", "--registry-url"])
def test_an_empty_home_or_registry_url_is_bad_input(tmp_path, monkeypatch, option):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [option, "", "inspect"])
    assert result.exit_code == 2 and f"{option} is empty" in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []  # no registry.db in the current folder


def test_an_empty_slatectl_home_variable_still_means_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLATECTL_HOME", "")
    monkeypatch.delenv("SLATECTL_REGISTRY_URL", raising=False)
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".slatectl" / "registry.db").is_file()


@pytest.fixture
def run_home(tmp_path) -> Path:
    home = tmp_path / "home"
    with open_registry(home=home) as registry:
        run = registry.start_run("sac-gems", "focused_topdown", 1, {})
        registry.record_validation(run.id, 10, 5.0, 1.0, 8)
    return home


def test_plot_into_a_missing_folder_is_refused_and_creates_nothing(run_home, tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "x.png"
    result = runner.invoke(app, ["--home", str(run_home), "inspect", "run", "1", "--plot", str(target)])
    assert result.exit_code == 2 and "does not exist" in result.stderr and str(target.parent) in result.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_plot_to_a_device_is_refused(run_home):
    stray = Path("/dev/full.png")  # what the plot used to write
    existed = stray.exists()
    result = runner.invoke(app, ["--home", str(run_home), "inspect", "run", "1", "--plot", "/dev/full"])
    assert result.exit_code == 2 and "not a regular file" in result.stderr, result.output
    assert stray.exists() == existed


def test_a_plot_write_the_system_refuses_is_one_write_failure_message(run_home, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    def disk_full(self, path, **_kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    target = tmp_path / "curve.png"
    result = runner.invoke(app, ["--home", str(run_home), "inspect", "run", "1", "--plot", str(target)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: could not write {target} (No space left on device); no plot was written")
    assert "unexpected" not in result.stderr and not target.exists()


# -- a read-only home, a file-size limit: an intact registry is never called damaged ---------------------------

def _can_mount_read_only(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {probe} {probe} && "
                               f"mount -o remount,ro,bind {probe} {probe} && ! touch {probe}/x 2>/dev/null"],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return done.returncode == 0


def slatectl_on_read_only_home(home: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`slatectl --home HOME ARGS` in a private mount namespace where HOME is a read-only bind mount (a
    read-only filesystem stops root too, unlike chmod)."""
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-c", "from slatectl.cli import main; main()",
                                                 "--home", str(home), *args])
    script = f"mount --bind {home} {home} && mount -o remount,ro,bind {home} {home} && exec {command}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLATECTL_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def read_only_home(tmp_path) -> Path:
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs `unshare -m` and bind mounts (root in a Linux mount namespace) for a read-only home")
    home = tmp_path / "home"
    with open_registry(home=home) as registry:
        run = registry.start_run("sac-gems", "focused_topdown", 7, {})
        registry.finish_run(run.id)
    return home


def test_reading_commands_work_on_a_read_only_home(read_only_home, tmp_path):
    listed = slatectl_on_read_only_home(read_only_home, ["inspect", "--json"])
    assert listed.returncode == 0, listed.stderr
    assert [r["seed"] for r in json.loads(listed.stdout)["runs"]] == [7]
    for args in (["ckpt", "list"], ["registry", "verify"], ["registry", "backup", str(tmp_path / "copy.db")]):
        result = slatectl_on_read_only_home(read_only_home, args)
        assert result.returncode == 0 and "not a valid" not in result.stderr, (args, result.stderr)
    with open_registry(Settings(home=tmp_path, registry_url=f"sqlite:///{tmp_path / 'copy.db'}")) as copy:
        assert [r.seed for r in copy.list_runs()] == [7]


def test_writing_commands_on_a_read_only_home_say_so(read_only_home):
    result = slatectl_on_read_only_home(read_only_home, ["collect", "--quality", "random", "--encoder", "none", "--env", "focused_topdown",
                                                         "--episodes", "3"])
    assert result.returncode == 2 and "read-only" in result.stderr, result.stderr
    assert "not a valid" not in result.stderr and "restore" not in result.stderr
    # Through the library (no up-front check): the first write fails as read-only, exit 1, nothing changed.
    script = ("from slatectl.registry import open_registry\n"
              f"with open_registry(home={str(read_only_home)!r}) as r:\n    r.start_run('slateq', 'focused_mix', 1, {{}})")
    library = slatectl_on_read_only_home(read_only_home, ["inspect"])  # the namespace works (sanity)
    assert library.returncode == 0
    command = f"mount --bind {read_only_home} {read_only_home} && mount -o remount,ro,bind {read_only_home} " \
              f"{read_only_home} && exec {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    written = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert written.returncode == 1 and "is read-only here" in written.stderr, written.stderr
    with open_registry(home=read_only_home) as registry:
        assert [r.seed for r in registry.list_runs()] == [7]


def test_a_registry_under_a_tiny_file_size_limit_is_not_called_damaged(tmp_path):
    with open_registry(home=tmp_path / "home") as registry:
        registry.start_run("sac-gems", "focused_topdown", 7, {})
    result = slatectl_under_file_limit(["ckpt", "list"], tmp_path, limit=1024)  # SQLite's WAL index needs 32 KB
    assert result.returncode == 2, result.stderr
    assert "not a valid" not in result.stderr and "restore" not in result.stderr
    assert "ulimit -f" in result.stderr and "not damaged" in result.stderr


# -- a diverging pretraining fails and registers nothing ------------------------------------------------------

HUGE_LR = 1e30  # finite, so the config accepts it; Adam's first step then blows the weights up


def test_gems_with_a_huge_learning_rate_fails_instead_of_returning_a_nan_model():
    slates, clicks, _ = prototype_slates(episodes=20, steps=100, seed=0)
    with pytest.raises(JobFailed, match="GeMS training diverged: the training loss is nan at epoch 1"):
        train_gems(slates, clicks, GeMSConfig(max_epochs=2, lr=HUGE_LR), seed=0)
    with pytest.raises(JobFailed, match=r"GeMS \(member 0\) training diverged"):
        train_gems_population([GeMSMember(slates, clicks, GeMSConfig(max_epochs=1, lr=HUGE_LR), seed) for seed in (0, 1)])


def test_mf_with_a_huge_learning_rate_fails_instead_of_returning_a_nan_table():
    slates, clicks, _ = topic_user_clicks(episodes=200, seed=0)
    with pytest.raises(JobFailed, match="MF training diverged"):
        train_mf(slates, clicks, MFConfig(lr=HUGE_LR, eval_every_batches=5, max_batches=20), seed=0)


def test_pretrain_gems_that_diverges_exits_1_and_registers_nothing(tmp_path):
    home = ["--home", str(tmp_path / "home")]
    assert runner.invoke(app, [*home, "data", "logged", "--env", "focused_topdown", "--episodes", "20"]).exit_code == 0
    result = runner.invoke(app, [*home, "pretrain", "gems", "--env", "focused_topdown", "--set", "logged.episodes=20",
                                 "--set", "max_epochs=1", "--set", f"lr={HUGE_LR}"])
    assert result.exit_code == 1 and "diverged" in result.stderr, result.output
    with open_registry(home=tmp_path / "home") as registry:
        assert registry.list_artifacts(kind="gems") == []
