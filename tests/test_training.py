"""Training through the library and the CLI: checkpoints at the requested steps, resume, config overrides."""

import json

import pytest
import torch
from typer.testing import CliRunner

from slatectl.registry import open_registry
from slatectl.agents import trainable_agents
from slatectl.cli import app
from slatectl.errors import BadInput
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer
from training_helpers import StopAt

SMALL = [
    "training.random_steps=10", "training.val_every=10", "training.val_episodes=8", "training.test_episodes=8",
    "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50",
    "logged.episodes=200", "gems.max_epochs=1", "gems.max_slates=4000", "mf.max_batches=30", "mf.eval_every_batches=10",
]


def _small(agent):
    overrides = list(SMALL)
    if agent == "reinforce-softmax":  # on-policy: capacity = batch = 1 (reference)
        overrides = [o for o in overrides if not o.startswith("agent.")]
    return overrides


@pytest.fixture
def settings(tmp_path):
    return Settings.resolve(home=tmp_path / "home")


@pytest.mark.parametrize("agent", trainable_agents())
def test_every_agent_trains_and_registers_checkpoints_at_requested_steps(agent, settings):
    config = resolve_run_config(agent, "focused_topdown", overrides=_small(agent),
                                cli_training={"max_steps": 30, "save_every": 20})
    with open_registry(settings) as registry:
        result = Trainer(registry, config, logs_dir=settings.home / "logs").run(command="test")[0]
        checkpoints = registry.list_checkpoints(run_id=result.run_id)
        validations = registry.validations(result.run_id)
        run = registry.get_run(result.run_id)
    assert [c.step for c in checkpoints] == [20, 30]
    assert all(c.val_episodes == 8 and c.test_episodes == 8 for c in checkpoints)
    assert [v.step for v in validations] == [10, 20, 30]
    assert {c.val_return_mean for c in checkpoints} == {v.return_mean for v in validations if v.step in (20, 30)}
    assert sum(c.is_best for c in checkpoints) == 1 and checkpoints[-1].is_last
    assert run.status == "finished" and run.config["training"]["random_steps"] == 10
    assert (settings.home / "logs" / f"run-{result.run_id}.csv").read_text().count("\n") >= 3


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(settings, tmp_path):
    overrides = _small("sac-topk-ideal")
    config = resolve_run_config("sac-topk-ideal", "focused_topdown", overrides=overrides,
                                cli_training={"max_steps": 40, "save_every": 20})
    with open_registry(settings) as registry:
        with pytest.raises(KeyboardInterrupt):
            Trainer(registry, config, StopAt(25)).run(command="test")[0]
        run_id = registry.list_runs()[0].id
        assert registry.get_run(run_id).status == "interrupted"
        assert [c.step for c in registry.list_checkpoints(run_id=run_id)] == [20]
        Trainer.resume(registry, run_id)
        resumed = registry.list_checkpoints(run_id=run_id)
        assert [c.step for c in resumed] == [20, 40]
        resumed_state = registry.load_checkpoint_state(resumed[-1].id)
    other = Settings.resolve(home=tmp_path / "other")
    with open_registry(other) as registry:
        result = Trainer(registry, config).run(command="test")[0]
        straight = registry.list_checkpoints(run_id=result.run_id)
        straight_state = registry.load_checkpoint_state(straight[-1].id)
    assert straight[-1].val_return_mean == resumed[-1].val_return_mean
    for key, value in straight_state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(resumed_state[key], value, msg=key)


def test_overrides_apply_and_unknown_keys_are_refused(tmp_path):
    config = resolve_run_config("sac-gems", "diffuse_mix", overrides=["agent.gamma=0.5", "training.val_every=7"])
    assert config.agent.gamma == 0.5 and config.training.val_every == 7
    defaults = resolve_run_config("sac-gems", "diffuse_mix")
    assert (defaults.agent.gamma, defaults.agent.tau, defaults.training.max_steps, defaults.gems.max_epochs) == (0.8, 0.002, 100_000, 15)
    for bad, fragment in [("agent.gamm=0.5", "agent.gamm"), ("training.val_every=abc", "training.val_every"),
                          ("nosection.x=1", "nosection")]:
        with pytest.raises(BadInput, match=fragment):
            resolve_run_config("sac-gems", "diffuse_mix", overrides=[bad])
    config_file = tmp_path / "c.yaml"
    config_file.write_text("agent:\n  pi_lr: 0.01\n")
    assert resolve_run_config("reinforce-softmax", "focused_mix", config_file=config_file).agent.pi_lr == 0.01
    with pytest.raises(BadInput, match="pi_lr"):
        resolve_run_config("slateq", "focused_mix", config_file=config_file)


def test_cli_train_then_ckpt_list(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")
    args = ["--home", home, "train", "sac-topk-ideal", "--env", "focused_mix", "--steps", "20", "--save-every", "10"]
    for item in _small("sac-topk-ideal"):
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(app, ["--home", home, "ckpt", "list", "--env", "focused_mix", "--json"]).stdout)
    assert [c["step"] for c in listed] == [10, 20]
    bad = runner.invoke(app, ["--home", home, "train", "sac-topk-ideal", "--env", "focused_mix", "--set", "agent.nope=1"])
    assert bad.exit_code == 2 and "agent.nope" in bad.output
    bad_env = runner.invoke(app, ["--home", home, "train", "sac-topk-ideal", "--env", "mars"])
    assert bad_env.exit_code == 2 and "unknown environment" in bad_env.output


def test_metrics_go_to_csv_and_tensorboard(tmp_path):
    settings = Settings.resolve(home=tmp_path / "home")
    config = resolve_run_config("sac-topk-ideal", "focused_mix", overrides=_small("sac-topk-ideal"),
                                cli_training={"max_steps": 30, "save_every": 15})
    logs = tmp_path / "logs"
    with open_registry(settings) as registry:
        run_id = Trainer(registry, config, logs_dir=logs).run(command="test")[0].run_id
    import csv

    rows = list(csv.DictReader((logs / f"run-{run_id}.csv").open()))
    assert [int(r["step"]) for r in rows if r["val_return"]] == [10, 15, 20, 30]
    assert any(r["critic_loss"] for r in rows)  # updates start after the 10 random steps

    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(logs / "tensorboard" / f"run-{run_id}"))
    events.Reload()
    assert {"episode_return", "val_return", "critic_loss"} <= set(events.Tags()["scalars"])
    val = events.Scalars("val_return")
    assert [e.step for e in val] == [10, 15, 20, 30]
    assert [e.value for e in val] == pytest.approx([float(r["val_return"]) for r in rows if r["val_return"]], rel=1e-5)
