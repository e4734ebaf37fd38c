"""`ckpt promote` / `ckpt list` semantics: untrained (random-phase) checkpoints are marked and never
suggested, duplicates by SHA-256 are shown, a far-from-target suggestion warns, the checkpoint file is
verified first, options are range-checked, and a refused promotion writes nothing at all."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app, ckpt_cmd
from slatectl.registry import open_registry

runner = CliRunner()
CONFIG = {"agent_name": "sac-gems", "training": {"random_steps": 2000, "max_steps": 3000}}


def invoke(settings, *args, **kwargs):
    return runner.invoke(app, ["--home", str(settings.home), "--registry-url", settings.registry_url, *args], **kwargs)


@pytest.fixture
def random_phase(sqlite_settings):
    """The issue's case: saves at 1,000 / 2,000 / 3,000 with a 2,000-step random phase; 1,000 and 2,000
    hold the same (untrained) weights."""
    initial = {"w": torch.tensor([0.5, -0.5])}
    with open_registry(sqlite_settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, CONFIG)
        reg.finish_run(run.id)
        for step, weights, value in ((1000, initial, 87.3), (2000, initial, 87.3), (3000, {"w": torch.ones(2)}, 100.4)):
            reg.register_checkpoint(run.id, step, weights, val_return_mean=value, val_return_std=2.04, val_episodes=20)
    return sqlite_settings


def registry_state(settings):
    with open_registry(settings) as reg:
        return ([(p.quality, p.checkpoint_id) for p in reg.promotion_history()],
                [(a.kind, a.id) for a in reg.list_artifacts()], sorted(reg.store.iter_keys()))


def test_random_phase_checkpoints_are_marked_untrained(random_phase):
    rows = json.loads(invoke(random_phase, "ckpt", "list", "--json").stdout)
    assert [(r["step"], r["untrained"]) for r in rows] == [(1000, True), (2000, True), (3000, False)]
    table = invoke(random_phase, "ckpt", "list")
    assert table.exit_code == 0 and table.stdout.count("untrained") == 2
    assert "87.3 ± 2.0" in table.stdout and "1,000" in table.stdout
    assert "None" not in table.stdout and "[]" not in table.stdout and "87.29" not in table.stdout


def test_untrained_checkpoints_are_never_suggested_and_duplicates_are_shown(random_phase, monkeypatch):
    monkeypatch.setattr(ckpt_cmd, "random_return_fn", lambda env: 50.0)
    result = invoke(random_phase, "ckpt", "promote", "--quality", "medium", "--yes")
    assert result.exit_code == 0, result.output
    assert "Promoted checkpoint 3" in result.stdout  # not step 1,000, the untrained pick
    assert "same as" in result.stdout and "untrained" in result.stdout
    # target 50 + 0.5 × (100.4 − 50) = 75.2; the only trained checkpoint is 25.2 away: say so.
    assert "far from the target" in " ".join(result.stderr.split()) and "never suggested" in result.stderr
    with open_registry(random_phase) as reg:
        assert reg.policy_return("focused_topdown", "random")[0] == 50.0  # recorded once promoted


def test_only_untrained_checkpoints_is_a_clear_refusal(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, CONFIG)
        reg.register_checkpoint(run.id, 300, {"w": torch.zeros(1)}, val_return_mean=5.0, val_return_std=0.0,
                                val_episodes=1)
    result = invoke(sqlite_settings, "ckpt", "promote", "--quality", "expert", "--yes")
    assert result.exit_code == 2 and "untrained" in result.stderr and registry_state(sqlite_settings)[0] == []


@pytest.mark.parametrize("args", [
    ["--target-fraction", "nan"], ["--target-fraction", "0"], ["--target-fraction", "1"],
    ["--target-fraction", "1.5"], ["--target-fraction", "-0.1"], ["--target-fraction", "inf"],
    [],  # no terminal and no --yes
])
def test_a_refused_promotion_writes_nothing(random_phase, monkeypatch, args):
    calls = []
    monkeypatch.setattr(ckpt_cmd, "random_return_fn", lambda env: calls.append(env) or 50.0)
    before = registry_state(random_phase)
    result = invoke(random_phase, "ckpt", "promote", "--quality", "medium", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert registry_state(random_phase) == before  # no promotion, no random-policy rollout, no file
    if args:
        assert calls == []  # refused before any work


@pytest.mark.parametrize("damage", ["bit-flip", "truncated", "missing"])
def test_promote_checks_the_file_first(random_phase, damage):
    with open_registry(random_phase) as reg:
        path = reg.store.path_for(reg.get_checkpoint(3).storage_key)
    data = path.read_bytes()
    if damage == "bit-flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    before = registry_state(random_phase)
    for args in (["3", "--quality", "expert"], ["--quality", "expert", "--yes"]):
        result = invoke(random_phase, "ckpt", "promote", *args)
        assert result.exit_code == 2, result.output
        assert "checkpoint 3" in result.stderr and "Traceback" not in result.output
    assert registry_state(random_phase)[0] == before[0] == []


@pytest.mark.parametrize("args, words", [
    (["ckpt", "list", "--env", "nosuch"], "unknown environment 'nosuch'"),
    (["ckpt", "history", "--env", "nosuch"], "unknown environment"),
    (["ckpt", "promote", "--quality", "expert", "--env", "nosuch", "--yes"], "unknown environment"),
    (["ckpt", "list", "--run", "0"], "greater than or equal to 1"),
    (["ckpt", "list", "--quality", "great"], "is not one of"),
    (["ckpt", "show", "0"], "greater than or equal to 1"),
    (["ckpt", "show", str(2**63)], "less than or equal to"),
    (["ckpt", "promote", "0", "--quality", "expert"], "greater than or equal to 1"),
    (["ckpt", "promote", "--quality", "expert", "--step", "-5"], "greater than or equal to 0"),
])
def test_options_are_validated_before_any_work(random_phase, args, words):
    before = registry_state(random_phase)
    result = invoke(random_phase, *args)
    assert result.exit_code == 2 and words in result.stderr and "Traceback" not in result.output
    assert registry_state(random_phase) == before


def test_show_prints_clean_numbers(random_phase):
    result = invoke(random_phase, "ckpt", "show", "3")
    assert result.exit_code == 0, result.output
    assert "None" not in result.stdout and "[]" not in result.stdout and "100.4" in result.stdout
    assert "finished" in result.stdout


def test_stale_runs_are_marked_in_the_listing(random_phase):
    from datetime import timedelta

    from sqlmodel import Session

    from slatectl.registry.models import Run, utcnow

    with open_registry(random_phase) as reg:
        run = reg.start_run("slateq", "focused_topdown", 2, {})
        reg.register_checkpoint(run.id, 5, {"w": torch.zeros(1)}, val_return_mean=1.0, val_return_std=0.0, val_episodes=1)
        with Session(reg.engine) as session:
            row = session.get(Run, run.id)
            row.heartbeat_at = utcnow() - timedelta(hours=1)
            session.add(row)
            session.commit()
    table = invoke(random_phase, "ckpt", "list")
    assert f"{run.id} (stale)" in table.stdout
    rows = json.loads(invoke(random_phase, "ckpt", "list", "--json").stdout)
    assert [r["run_stale"] for r in rows] == [False, False, False, True]
