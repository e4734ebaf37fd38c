"""`slatectl ckpt`, `inspect` and `registry verify` through Typer's CliRunner: output contract,
exit codes, and that refused commands leave the registry unchanged."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import torch
from typer.testing import CliRunner

from sqlmodel import Session

from slatectl.registry import Run, open_registry
from slatectl.registry.models import utcnow
from slatectl.cli import app, ckpt_cmd

runner = CliRunner()
RETURNS = {10_000: 6.0, 20_000: 11.0, 30_000: 14.0, 40_000: 19.0, 50_000: 24.0}  # best 24


@pytest.fixture
def populated(sqlite_settings):
    """One sac-gems run on focused_topdown with five checkpoints; random return 4 registered."""
    with open_registry(sqlite_settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, {"steps": 50_000}, command="slatectl train sac-gems")
        for step, value in RETURNS.items():
            reg.register_checkpoint(run.id, step, {"w": torch.full((2,), value)}, val_return_mean=value,
                                    val_return_std=1.0, val_episodes=20)
        reg.record_policy_return("focused_topdown", "random", 4.0)
    return sqlite_settings


def invoke(settings, *args, **kwargs):
    return runner.invoke(app, ["--home", str(settings.home), "--registry-url", settings.registry_url, *args], **kwargs)


def history(settings):
    with open_registry(settings) as reg:
        return [(p.quality, p.checkpoint_id, p.active) for p in reg.promotion_history()]


def test_ckpt_list_json_has_the_contract_fields(populated):
    result = invoke(populated, "ckpt", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {"id", "run_id", "env", "agent", "step", "val_return", "best", "sha256"} <= set(rows[0])
    assert [r["step"] for r in rows] == list(RETURNS)
    assert [r["best"] for r in rows] == [False, False, False, False, True]
    assert json.loads(invoke(populated, "ckpt", "list", "--env", "diffuse_mix", "--json").stdout) == []
    table = invoke(populated, "ckpt", "list", "--agent", "sac-gems")
    assert table.exit_code == 0 and "50,000" in table.stdout and "best" in table.stdout


def test_ckpt_show(populated):
    result = invoke(populated, "ckpt", "show", "2", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["step"], shown["run"]["agent"]) == (2, 20_000, "sac-gems")
    assert shown["path"].endswith(".pt")
    missing = invoke(populated, "ckpt", "show", "99")
    assert missing.exit_code == 2 and "no checkpoint 99" in missing.stderr and "Traceback" not in missing.output


def test_promote_without_terminal_needs_yes_or_an_id(populated):
    result = invoke(populated, "ckpt", "promote", "--quality", "medium")
    assert result.exit_code == 2
    assert "--yes" in result.stderr and "Traceback" not in result.output
    assert "closest to random + 0.5" in result.stdout  # the candidates and the rule were shown first
    assert history(populated) == []


def test_promote_medium_takes_the_suggestion_with_yes(populated):
    # random 4, best 24: target 14 -> step 30,000 (checkpoint 3).
    result = invoke(populated, "ckpt", "promote", "--quality", "medium", "--yes", "--note", "half-way")
    assert result.exit_code == 0, result.output
    assert "← suggested" in result.stdout and "Promoted checkpoint 3" in result.stdout
    assert "registered rollout" in result.stdout
    assert history(populated) == [("medium", 3, True)]
    listed = json.loads(invoke(populated, "ckpt", "list", "--quality", "medium", "--json").stdout)
    assert [r["id"] for r in listed] == [3]


def test_target_fraction_and_step_choose_other_checkpoints(populated):
    assert invoke(populated, "ckpt", "promote", "--quality", "medium", "--yes", "--target-fraction", "0.75").exit_code == 0
    assert history(populated) == [("medium", 4, True)]  # 4 + 0.75 × 20 = 19 -> step 40,000
    by_step = invoke(populated, "ckpt", "promote", "--quality", "medium", "--step", "20000")
    assert by_step.exit_code == 0, by_step.output
    assert history(populated) == [("medium", 4, False), ("medium", 2, True)]
    missing_step = invoke(populated, "ckpt", "promote", "--quality", "medium", "--step", "12345")
    assert missing_step.exit_code == 2 and "saved steps" in missing_step.stderr


def test_promote_interactively_asks_first(populated, monkeypatch):
    monkeypatch.setattr(ckpt_cmd, "is_interactive", lambda: True)
    declined = invoke(populated, "ckpt", "promote", "--quality", "expert", input="n\n")
    assert declined.exit_code == 0 and "Nothing promoted" in declined.stdout
    assert history(populated) == []
    accepted = invoke(populated, "ckpt", "promote", "--quality", "expert", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert history(populated) == [("expert", 5, True)]


def test_promote_by_id_and_supersession_in_history_json(populated):
    assert invoke(populated, "ckpt", "promote", "1", "--quality", "expert").exit_code == 0
    second = invoke(populated, "ckpt", "promote", "5", "--quality", "expert", "--env", "focused_topdown")
    assert second.exit_code == 0 and "supersedes promotion 1" in second.stdout
    result = invoke(populated, "ckpt", "history", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [{k: r[k] for k in ("env", "quality", "checkpoint_id", "active")} for r in rows] == [
        {"env": "focused_topdown", "quality": "expert", "checkpoint_id": 1, "active": False},
        {"env": "focused_topdown", "quality": "expert", "checkpoint_id": 5, "active": True}]
    assert all(r["promoted_at"].endswith("Z") for r in rows)
    assert json.loads(invoke(populated, "ckpt", "history", "--quality", "medium", "--json").stdout) == []


@pytest.mark.parametrize("args, message", [
    (["5", "--quality", "expert", "--env", "diffuse_mix"], "not diffuse_mix"),
    (["5", "--quality", "random"], "needs no checkpoint"),
    (["5", "--quality", "superb"], "is not one of 'random', 'medium', 'expert'"),  # Typer lists the choices
    (["42", "--quality", "expert"], "no checkpoint 42"),
    (["5", "--quality", "expert", "--step", "10000"], "either CKPT_ID or --step"),
    (["--quality", "expert", "--env", "diffuse_mix", "--yes"], "no checkpoints for env diffuse_mix"),
])
def test_bad_promotions_exit_2_and_change_nothing(populated, args, message):
    result = invoke(populated, "ckpt", "promote", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert history(populated) == []


def test_several_envs_need_env(populated):
    with open_registry(populated) as reg:
        run = reg.start_run("slateq", "diffuse_mix", 1, {})
        reg.register_checkpoint(run.id, 1, {"w": torch.zeros(1)}, val_return_mean=1.0, val_return_std=0.0, val_episodes=1)
    result = invoke(populated, "ckpt", "promote", "--quality", "expert", "--yes")
    assert result.exit_code == 2 and "--env" in result.stderr
    chosen = invoke(populated, "ckpt", "promote", "--quality", "expert", "--yes", "--env", "diffuse_mix")
    assert chosen.exit_code == 0 and history(populated) == [("expert", 6, True)]


def test_medium_without_registered_random_return_uses_the_injected_source(sqlite_settings, monkeypatch):
    with open_registry(sqlite_settings) as reg:
        run = reg.start_run("sac-gems", "diffuse_divpen", 1, {})
        for step, value in {1: 2.0, 2: 10.0, 3: 20.0}.items():
            reg.register_checkpoint(run.id, step, {"w": torch.zeros(1)}, val_return_mean=value, val_return_std=0.0,
                                    val_episodes=1)
    monkeypatch.setattr(ckpt_cmd, "random_return_fn", lambda env: 0.0 if env == "diffuse_divpen" else 1 / 0)
    result = invoke(sqlite_settings, "ckpt", "promote", "--quality", "medium", "--yes")
    assert result.exit_code == 0, result.output
    assert "computed" in result.stdout and history(sqlite_settings) == [("medium", 2, True)]  # target 10


def test_inspect_overview_run_and_dataset(populated, tmp_path):
    with open_registry(populated) as reg:
        promotion = reg.promote_checkpoint(None, "medium", 3)
        dataset = reg.register_dataset("focused_topdown", "medium", b"episodes", episodes=4, transitions=400,
                                       return_mean=13.0, return_std=2.0, format="npz", seed=0, checkpoint_id=3,
                                       promotion_id=promotion.id)
    overview = invoke(populated, "inspect", "--json")
    assert overview.exit_code == 0, overview.output
    doc = json.loads(overview.stdout)
    assert doc["counts"] == {"runs": 1, "checkpoints": 5, "artifacts": 1, "promotions": 1, "datasets": 1}
    assert doc["runs"][0]["checkpoints"] == 5 and doc["promotions"][0]["checkpoint_id"] == 3
    assert invoke(populated, "inspect").exit_code == 0

    plot = tmp_path / "curve.png"
    run = invoke(populated, "inspect", "run", "1", "--plot", str(plot), "--json")
    assert run.exit_code == 0, run.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [c["step"] for c in json.loads(run.stdout)["checkpoints"]] == list(RETURNS)
    assert invoke(populated, "inspect", "run", "1").exit_code == 0
    assert invoke(populated, "inspect", "run", "9").exit_code == 2

    shown = invoke(populated, "inspect", "dataset", str(dataset.id), "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert (doc["episodes"], doc["transitions"], doc["mean_return"]) == (4, 400, 13.0)
    assert [n["kind"] for n in doc["lineage"]] == ["dataset", "promotion", "checkpoint", "run"]
    assert doc["returns"].startswith("not available")  # the payload is not an npz: say so, don't crash
    assert invoke(populated, "inspect", "dataset", str(dataset.id)).exit_code == 0
    unplottable = invoke(populated, "inspect", "dataset", str(dataset.id), "--plot", str(tmp_path / "h.png"))
    assert unplottable.exit_code == 2 and "cannot plot" in unplottable.output and not (tmp_path / "h.png").exists()
    assert invoke(populated, "inspect", "dataset", "77").exit_code == 2


def test_registry_verify_detects_corruption_and_fix_keeps_rows(populated):
    clean = invoke(populated, "registry", "verify")
    assert clean.exit_code == 0 and "All files present" in clean.stdout
    with open_registry(populated) as reg:
        checkpoint = reg.get_checkpoint(2)
        path = reg.store.path_for(checkpoint.storage_key)
        orphan = reg.store.put_bytes("gems", b"stray")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = invoke(populated, "registry", "verify", "--json")
    assert result.exit_code == 2 and "checkpoint 2" in result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and [p["row_id"] for p in report["problems"]] == [2]
    assert report["orphans"] == [orphan.key]
    fixed = invoke(populated, "registry", "verify", "--fix", "--yes")
    assert fixed.exit_code == 2 and "moved to" in fixed.stdout
    with open_registry(populated) as reg:
        assert len(reg.list_checkpoints()) == 5 and path.exists() and not reg.store.exists(orphan.key)
        assert list(reg.trash_dir.glob(f"*/{orphan.key}"))  # moved, not deleted
    refused = invoke(populated, "ckpt", "promote", "2", "--quality", "expert")
    assert refused.exit_code == 2 and "SHA-256" in refused.stderr  # the file is checked before promoting
    assert history(populated) == []
    with open_registry(populated) as reg, pytest.raises(Exception, match="SHA-256"):
        reg.load_checkpoint_state(2)


def test_unreachable_registry_is_exit_2(tmp_path):
    result = runner.invoke(app, ["--registry-url", f"postgresql+psycopg://x@/db?host={tmp_path}/none&port=1",
                                 "ckpt", "list"])
    assert result.exit_code == 2 and "cannot be used" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["ckpt", "list"], ["ckpt", "show"], ["ckpt", "promote"], ["ckpt", "history"],
                                     ["inspect"], ["inspect", "run"], ["inspect", "dataset"], ["registry", "verify"],
                                     ["registry", "backup"], ["registry", "restore"], ["registry", "gc"]])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example: slatectl" in result.stdout


def test_inspect_shows_liveness_and_disk_use_per_run(populated):
    with open_registry(populated) as reg:
        (run,) = reg.list_runs()
        stored = sum(c.size for c in reg.list_checkpoints(run_id=run.id))
        with Session(reg.engine) as session:  # the process that trained it stopped beating 10 minutes ago
            row = session.get(Run, run.id)
            row.heartbeat_at = utcnow() - timedelta(seconds=600)
            session.add(row)
            session.commit()
    overview = json.loads(invoke(populated, "inspect", "--json").stdout)
    (summary,) = overview["runs"]
    assert summary["liveness"] == "stale" and summary["disk_bytes"] == stored > 0
    detail = json.loads(invoke(populated, "inspect", "run", str(run.id), "--json").stdout)
    assert detail["liveness"] == "stale" and detail["disk_bytes"] == stored
    table = invoke(populated, "inspect", "run", str(run.id))
    assert table.exit_code == 0 and "stale" in table.stdout and "disk" in table.stdout
