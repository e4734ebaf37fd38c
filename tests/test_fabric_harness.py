"""Online training under Lightning Fabric (slatectl/harness.py): device, precision, seeding and launch
from Fabric, the loops' own code inside; precision 32 changes nothing, and bf16-mixed is refused (the stacked
agents' hand-written kernels are float32-only: docs/lightning.md)."""

import copy
import json
import os
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.errors import BadInput
from slatectl.harness import TrainingHarness, seed_everything, training_harness
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.assembly import build_agent, ensure_agent_inputs
from slatectl.train.config import resolve_run_config, run_config_from_dict
from slatectl.train.episodes import stack_batches
from slatectl.train.loop import Trainer
from slatectl.train.population import population_configs
from slatectl.train.replay import EpisodeReplay
from stacked_play import generators, play_one, stacked

SMALL = ["training.random_steps=10", "training.val_every=10", "training.val_episodes=8", "training.test_episodes=8",
         "training.random_phase_batch=10", "agent.batch_size=8", "agent.capacity=50", "logged.episodes=200",
         "gems.max_epochs=1", "gems.max_slates=4000", "mf.max_batches=30", "mf.eval_every_batches=10"]


def _agent_and_batch(registry, agent_name, env="focused_topdown"):
    """A run's agent in the stacked form the trainer drives (a lone run: one member) and a batch of its
    random-phase episodes."""
    extra = ["agent.capacity=8"] if agent_name.startswith("reinforce") else []  # on-policy: capacity = batch
    config = resolve_run_config(agent_name, env, overrides=SMALL + extra)
    seed_everything(config.training.seed)
    env, layout = build_agent(config, ensure_agent_inputs(registry, config, lambda text: None).inputs)
    agent = stacked(agent_name, layout)
    replay = EpisodeReplay(50, 8)
    replay.add(play_one(env, agent, torch.arange(20), 1, "random"))
    agent.train()
    agent.set_step(100)
    return agent, stack_batches([replay.sample()])


def _update(agent, batch, run):
    """A copy of `agent` updated once by `run(agent, batch, draws)` with the same member generator."""
    agent = copy.deepcopy(agent)
    return agent, run(agent, batch, generators(5))


@pytest.fixture
def registry(tmp_path):
    with open_registry(Settings.resolve(home=tmp_path / "home")) as opened:
        yield opened


@pytest.mark.parametrize("agent_name", ["sac-topk-ideal", "slateq", "reinforce-softmax"])
def test_an_update_at_precision_32_equals_the_plain_update_bit_for_bit(registry, agent_name):
    agent, batch = _agent_and_batch(registry, agent_name)
    harness = TrainingHarness("cpu", "32")
    plain, plain_metrics = _update(agent, batch, lambda a, b, g: a.update(b, g))  # loss.backward(), no Fabric
    fabric, fabric_metrics = _update(agent, batch, harness.update)
    assert fabric_metrics == plain_metrics
    before, after = agent.member_state_dict(0), plain.member_state_dict(0)
    for name, value in after.items():
        assert torch.equal(value, fabric.member_state_dict(0)[name]), name
    changed = [n for n, v in before.items() if v.is_floating_point() and not torch.equal(v, after[n])]
    assert changed  # the update did change weights, so the equality above is not vacuous


def test_seed_everything_seeds_torch_numpy_and_random_as_their_own_seed_functions_do():
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    seed_everything(123)
    drawn = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(drawn[0], expected[0]) and np.array_equal(drawn[1], expected[1]) and drawn[2] == expected[2]
    assert os.environ["PL_GLOBAL_SEED"] == "123"  # what Lightning callbacks read (RegistryCheckpoint)
    seed_everything(2**32 - 1)  # the largest seed a run takes (TrainingConfig.validate)


def test_the_harness_takes_devices_and_precisions_it_supports_and_refuses_the_others():
    harness = training_harness("cpu", "32")
    assert harness.device == torch.device("cpu") and harness.fabric.device == torch.device("cpu")
    auto = training_harness("auto", "32", say=lambda text: None)
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BadInput, match="bf16-mixed runs on cuda only"):
        training_harness("cpu", "bf16-mixed")
    with pytest.raises(BadInput, match="unknown precision"):
        TrainingHarness("cpu", "16-mixed")
    with pytest.raises(BadInput, match="training.precision"):
        resolve_run_config("slateq", "focused_topdown", overrides=["training.precision=64"])


@pytest.mark.parametrize("seeds", [[1], [1, 2]], ids=["solo", "population"])
def test_bf16_is_refused_by_the_stacked_trainer_before_anything_is_recorded(registry, seeds):
    """Every run trains stacked (a solo run as a stack of one), and the stacked kernels are float32-only."""
    base = [resolve_run_config("slateq", "focused_topdown", overrides=SMALL + ["training.precision=bf16-mixed",
                                                                                 "training.device=cpu"])]
    with pytest.raises(BadInput, match="precision 32 only"):
        Trainer(registry, population_configs(base, seeds))
    assert registry.list_runs() == []


def test_cli_precision_is_recorded_refused_on_the_cpu_for_bf16_and_not_taken_by_resume(tmp_path):
    home = str(tmp_path / "home")
    runner = CliRunner()
    args = ["--home", home, "train", "slateq", "--env", "focused_topdown", "--steps", "12", "--device", "cpu"]
    for item in SMALL:
        args += ["--set", item]
    bad = runner.invoke(app, args + ["--precision", "bf16-mixed"])
    assert bad.exit_code == 2 and "--precision 32 only" in bad.output
    with open_registry(Settings.resolve(home=home)) as registry:
        assert registry.list_runs() == []  # refused before the run was recorded
    good = runner.invoke(app, args + ["--precision", "32"])
    assert good.exit_code == 0, good.output
    with open_registry(Settings.resolve(home=home)) as registry:
        run = registry.list_runs()[0]
        assert run.config["training"]["precision"] == "32"
    resumed = runner.invoke(app, ["--home", home, "train", "--resume", str(run.id), "--precision", "32"])
    assert resumed.exit_code == 2 and "--precision" in resumed.output
    assert json.loads(runner.invoke(app, ["--home", home, "ckpt", "list", "--json"]).stdout)[0]["step"] == 12


def test_a_run_recorded_before_precision_existed_resumes_at_32():
    recorded = resolve_run_config("slateq", "focused_topdown", overrides=SMALL).to_dict()
    del recorded["training"]["precision"]  # a run recorded before --precision existed
    assert run_config_from_dict(recorded).training.precision == "32"
