"""Numeric options and files are validated before any work or registry write: exit 2, a clear message,
no traceback, and the registry untouched (issue 13 items 6 and 7)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.registry import open_registry

runner = CliRunner()


@pytest.fixture
def home_with_a_run(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, {"training": {"max_steps": 2000}}, command="slatectl train")
        for step, value in ((1000, 5.0), (2000, 9.0)):
            reg.register_checkpoint(run.id, step, {"w": torch.full((2,), value)}, val_return_mean=value,
                                    val_return_std=1.0, val_episodes=20)
    return sqlite_settings


def invoke(home, *args):
    return runner.invoke(app, ["--home", str(home), *args])


def assert_refused(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


TRAIN = ["train", "reinforce-softmax", "--env", "focused_topdown", "--steps", "3"]


@pytest.mark.parametrize("extra, fragment", [
    (["--seed", "-1"], "--seed"), (["--seed", str(2**63)], "--seed"), (["--seed", "1e23"], "--seed"),
    (["--seed", str(2**64)], "--seed"), (["--steps", str(10**20)], "--steps"), (["--save-every", "0"], "--save-every"),
    (["--jobs", "0"], "--jobs"), (["--jobs", "1000"], "--jobs"), (["--device", "tpu"], "--device"),
    (["--set", "agent.pi_lr=nan"], "finite"), (["--set", "agent.pi_lr=inf"], "finite"),
    (["--set", "agent.pi_lr=0"], "learning rate"), (["--set", "gems.lr=-1e-3"], "learning rate"),
    (["--set", "gems.lr=.nan"], "finite"), (["--set", "training.seed=-1"], "training.seed"),
    (["--set", f"training.seed={2**40}"], "training.seed"), (["--set", f"training.val_seed={2**64}"], "training.val_seed"),
])
def test_train_refuses_before_any_work(tmp_path, extra, fragment):
    home = tmp_path / "home"
    assert_refused(invoke(home, *TRAIN, *extra), fragment)
    assert not home.exists()  # no registry, no logs, no scratch: nothing was started


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_train_device_cuda_without_a_gpu(tmp_path):
    result = invoke(tmp_path / "home", *TRAIN, "--device", "cuda")
    assert_refused(result, "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--seed", "1e23"], "--seed"), (["--seed", str(2**64)], "--seed"), (["--seed", "-1"], "--seed"),
    (["--episodes", str(10**20)], "--episodes"), (["--episodes", "0"], "--episodes"), (["--batch", "0"], "--batch"),
    (["--quality", "great"], "--quality"), (["--format", "csv"], "--format"), (["--env", "nowhere"], "unknown environment"),
])
def test_collect_refuses_before_any_work(tmp_path, extra, fragment):
    base = ["collect", "--quality", "random", "--env", "focused_topdown", "--episodes", "2"]
    home = tmp_path / "home"
    args = base + extra if "--quality" not in extra else ["collect", "--env", "focused_topdown", *extra]
    if "--env" in extra:
        args = ["collect", "--quality", "random", *extra]
    assert_refused(invoke(home, *args), fragment)
    assert not home.exists()


@pytest.mark.parametrize("args, fragment", [
    (["pretrain", "gems", "--env", "focused_topdown", "--set", "lr=nan"], "finite"),
    (["pretrain", "gems", "--env", "focused_topdown", "--set", "max_slates=1"], "max_slates"),
    (["pretrain", "gems", "--env", "focused_topdown", "--set", "logged.episodes=1"], "logged.episodes"),
    (["pretrain", "mf", "--env", "focused_topdown", "--set", "lr=0"], "learning rate"),
    (["pretrain", "mf", "--env", "focused_topdown", "--seed", str(2**63)], "--seed"),
    (["data", "logged", "--env", "focused_topdown", "--epsilon", "nan"], "--epsilon"),
    (["data", "logged", "--env", "focused_topdown", "--episodes", "1"], "--episodes"),
])
def test_pretrain_and_logged_refuse_before_any_work(tmp_path, args, fragment):
    home = tmp_path / "home"
    assert_refused(invoke(home, *args), fragment)
    assert not home.exists()


def test_pretrain_gems_with_few_slates_works(tmp_path):
    # 100 slates = one 100-step episode: the validation part is cut by rows, not by episodes.
    result = invoke(tmp_path / "home", "pretrain", "gems", "--env", "focused_topdown", "--set", "max_slates=100",
                    "--set", "logged.episodes=20", "--set", "max_epochs=1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].isdigit()


def test_plot_with_an_unsupported_extension_is_refused(home_with_a_run):
    result = invoke(home_with_a_run.home, "inspect", "run", "1", "--plot", str(home_with_a_run.home / "x.xyz"))
    assert_refused(result, "'.xyz'", ".png, .pdf, .svg")
    assert not (home_with_a_run.home / "x.xyz").exists()


def test_plot_into_a_folder_reports_the_file_written(home_with_a_run, tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    result = invoke(home_with_a_run.home, "inspect", "run", "1", "--plot", str(folder), "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["plot"]
    assert written == str(folder / "run-1.png") and (folder / "run-1.png").stat().st_size > 0
    bare = invoke(home_with_a_run.home, "inspect", "run", "1", "--plot", str(tmp_path / "curve"))
    assert bare.exit_code == 0 and (tmp_path / "curve.png").is_file()
    assert f"written to {tmp_path / 'curve.png'}" in " ".join(bare.stdout.split()).replace("\n", "")


def test_run_table_has_no_python_reprs(home_with_a_run):
    result = invoke(home_with_a_run.home, "inspect", "run", "1")
    assert result.exit_code == 0, result.output
    for leak in ("None", "[]", "{'"):
        assert leak not in result.stdout, (leak, result.stdout)
    assert "training.max_steps=2000" in result.stdout


def test_device_auto_takes_cuda_when_visible_and_says_so(monkeypatch):
    from slatectl import device

    said = []
    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device.torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    assert device.resolve_device("auto", say=said.append) == "cuda"
    assert said and "Fake GPU" in said[0]
    assert device.resolve_device("cuda") == "cuda" and device.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: False)
    said.clear()
    assert device.resolve_device("auto", say=said.append) == "cpu" and said == []
