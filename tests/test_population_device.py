"""The population's device path (slatectl/train/population.py, slatectl/sim/member_envs.py), checked on the
CPU through the same code as on a GPU.

As for solo training (test_gpu_paths.py): what makes the loop fast on a GPU is checked by its CPU-visible
consequence, how often slatectl code reads a tensor back to the host (each read waits for a GPU). Tests
marked `cuda` need a GPU and skip without one.
"""

from __future__ import annotations

import pytest
import torch

from host_reads import count_host_reads
from slatectl.agents import AGENTS, AgentInputs
from slatectl.config_tools import build_config
from slatectl.pretrain.gems_train import GeMSConfig, build_gems
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.config import default_config_dict, resolve_run_config
from slatectl.train.episodes import play_member_episodes
from slatectl.train.loop import Trainer
from slatectl.train.population import population_configs

CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run by bench/gpu_check.sh on one)")
ENVS = ["focused_topdown", "diffuse_divpen"]
TINY_TRAINING = ["training.random_steps=10", "training.val_every=1000", "training.val_episodes=4",
                 "training.test_episodes=4", "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50"]


def _stacked(name: str, envs: list):
    defaults = default_config_dict(name)["agent"]
    small = {} if name == "reinforce-softmax" else {"batch_size": 4, "capacity": 50}
    params = build_config(AGENTS[name].params_cls, {**defaults, **small}, "agent.")
    members = []
    for k, env in enumerate(envs):
        torch.manual_seed(k)
        inputs = AgentInputs()
        if name == "sac-gems":
            gems = build_gems(GeMSConfig()).eval().requires_grad_(False)
            inputs = AgentInputs(gems=gems, gems_bounds=(torch.zeros(32), torch.full((32,), 2.0)))
        members.append(AGENTS[name].build(params, env, inputs))
    return AGENTS[name].population(members)


def _hot_path(counts) -> int:
    return sum(n for (_, module), n in counts.items() if module.startswith(("slatectl.agents", "slatectl.train")))


@pytest.mark.parametrize("name", ["sac-gems", "sac-topk-ideal", "sac-wknn", "reinforce-softmax"])
def test_population_acting_reads_nothing_back_per_env_step(name, monkeypatch) -> None:
    envs = [make_env(n) for n in ENVS]
    agent = _stacked(name, envs)
    member_envs = MemberEnvs(envs, agent.device)
    generators = [torch.Generator().manual_seed(k) for k in range(len(envs))]
    counts = count_host_reads(monkeypatch)
    episodes = play_member_episodes(member_envs, agent, torch.arange(3), [1, 2], "explore", generators)
    assert _hot_path(counts) == 0, dict(counts)
    assert episodes.rewards.shape == (len(envs), 3, envs[0].config.episode_length)
    assert episodes.rewards.device == member_envs.device


@pytest.mark.parametrize("name", ["sac-topk-ideal", "reinforce-softmax"])
def test_a_stacked_update_reads_every_members_metrics_in_one_transfer(name, monkeypatch) -> None:
    envs = [make_env(n) for n in ENVS]
    agent = _stacked(name, envs)
    generators = [torch.Generator().manual_seed(k) for k in range(len(envs))]
    episodes = play_member_episodes(MemberEnvs(envs), agent, torch.arange(4), [1, 2], "random", generators)
    counts = count_host_reads(monkeypatch)
    metrics = agent.update(episodes, generators)
    assert _hot_path(counts) == 1, dict(counts)
    assert len(metrics) == len(envs) and all(isinstance(v, float) for m in metrics for v in m.values())
    assert metrics[0] != metrics[1]


def test_member_envs_on_a_named_device_play_the_same_users_and_still_fill_oracle_positions() -> None:
    envs = [make_env(n) for n in ENVS]
    agent = _stacked("sac-topk-ideal", envs)
    batches = []
    for device in (None, "cpu"):  # where the envs are, and named: the same simulator
        generators = [torch.Generator().manual_seed(k) for k in range(len(envs))]
        member_envs = MemberEnvs(envs, device)
        assert member_envs.device == torch.device("cpu") and member_envs.variant.device == member_envs.device
        batches.append(play_member_episodes(member_envs, agent, torch.arange(4), [1, 2], "explore", generators))
    for field in ("slates", "clicks", "rewards", "user_states", "actions"):
        assert torch.equal(getattr(batches[0], field), getattr(batches[1], field)), field
    # An oracle position in a slate is filled unless the caller says there is none (the agents' case).
    member_envs = MemberEnvs(envs)
    member_envs.reset(torch.arange(2), [1, 2])
    slates = torch.randint(0, 1000, (2, 2, 10), generator=torch.Generator().manual_seed(0))
    slates[:, :, 0] = -1
    assert bool((member_envs.step(slates.clone()).observation.slate >= 0).all())


def test_the_population_loop_reads_at_most_twice_per_learning_step(tmp_path, monkeypatch) -> None:
    # One read of the members' episode returns and one of the stacked update's metrics per step; a
    # per-env-step or per-member read shows up as a difference between a short and a long run.
    reads = []
    for steps in (12, 20):
        base = [resolve_run_config("sac-topk-ideal", env, overrides=TINY_TRAINING,
                                   cli_training={"max_steps": steps, "device": "cpu"}) for env in ENVS]
        with open_registry(Settings.resolve(home=tmp_path / str(steps))) as registry:
            counts = count_host_reads(monkeypatch)
            Trainer(registry, population_configs(base, [3])).run(command="test")
            reads.append(sum(n for (_, module), n in counts.items()
                             if module in ("slatectl.train.population", "slatectl.sim.member_envs")
                             or module.startswith("slatectl.agents")))
            monkeypatch.undo()
    assert 0 < reads[1] - reads[0] <= 2 * (20 - 12), reads


def test_population_device_defaults_to_auto_and_members_record_the_device_they_resolved(tmp_path, monkeypatch) -> None:
    configs = population_configs([resolve_run_config("sac-gems", env) for env in ENVS], [1])
    assert configs[0].training.device == "auto" and configs[0].gems.accelerator == "cpu"
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        on_cpu = Trainer(registry, configs)
        assert on_cpu.device == torch.device("cpu")
        assert all(c.training.device == "cpu" and c.gems.accelerator == "cpu" for c in on_cpu.configs)

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
        with_gpu = Trainer(registry, configs)
        # The GeMS each member pretrains for itself is trained on the population's device, as a solo run's.
        assert with_gpu.device == torch.device("cuda")
        assert all(c.training.device == "cuda" and c.gems.accelerator == "cuda" for c in with_gpu.configs)


@cuda
def test_member_episodes_on_cuda_match_the_cpu_ones_in_the_random_phase() -> None:
    envs = [make_env(n) for n in ENVS]
    batches = []
    for device in ("cpu", "cuda"):
        agent = _stacked("reinforce-softmax", envs).to(device)
        generators = [torch.Generator().manual_seed(k) for k in range(len(envs))]
        batches.append(play_member_episodes(MemberEnvs(envs, device), agent, torch.arange(4), [1, 2], "random",
                                            generators))
    cpu, gpu = batches
    assert gpu.slates.device.type == "cuda"
    assert torch.equal(gpu.slates.cpu(), cpu.slates) and torch.equal(gpu.clicks.cpu(), cpu.clicks)
    torch.testing.assert_close(gpu.user_states.cpu(), cpu.user_states, atol=1e-5, rtol=1e-5)


@cuda
def test_a_population_trains_on_cuda_with_simulator_agent_and_replay_there(tmp_path) -> None:
    base = [resolve_run_config("sac-topk-ideal", env, overrides=TINY_TRAINING,
                               cli_training={"max_steps": 14, "save_every": 14, "device": "cuda"}) for env in ENVS]
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        results = Trainer(registry, population_configs(base, [1])).run(command="test")
        runs = [registry.get_run(r.run_id) for r in results]
        state = registry.load_checkpoint_state(results[0].checkpoints[-1].id)
    assert all(r.status == "finished" and r.config["training"]["device"] == "cuda" for r in runs)
    assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))
    assert all(0 <= r.tests[0].test_mean <= 100 * 10 for r in results)
