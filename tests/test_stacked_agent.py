"""The pieces every stacked agent shares (slatectl/agents/stacked.py), checked on a non-SAC agent: the
fused Adam over the stack, a member exported as a run of its own, `to()`, and random-phase acting;
and the stacked random policy (no weights) against the simulator's own random policy.

(SAC's use of the same pieces is checked in test_sac_population_kernels.py; whole first updates against
solo runs in test_population.py.)"""

from __future__ import annotations

import pytest
import torch

from slatectl.agents.base import EpisodeBatch
from slatectl.agents.random_policy import RandomAgent, StackedRandom
from slatectl.agents.reinforce import ReinforceParams, ReinforceSoftmax, StackedReinforce
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.policies import RandomSlatePolicy
from slatectl.train.episodes import stack_batches

K, E, H, SLATE, ITEMS = 3, 4, 6, 10, 200


def _members() -> list[ReinforceSoftmax]:
    members = []
    for k in range(K):
        torch.manual_seed(200 + k)
        members.append(ReinforceSoftmax(ReinforceParams(), ITEMS, SLATE))
    return members


def _batch(seed: int) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    slates = torch.randint(0, ITEMS, (K, E, H + 1, SLATE), generator=g)
    clicks = (torch.rand(K, E, H + 1, SLATE, generator=g) < 0.2).float()
    rewards = clicks[:, :, 1:].sum(dim=-1)
    return EpisodeBatch(slates, clicks, torch.zeros(K, E, H, 0), slates[:, :, 1:], rewards,
                        torch.randn(K, E, H + 1, 20, generator=g))


def _member(batch: EpisodeBatch, k: int) -> EpisodeBatch:
    return EpisodeBatch(*(getattr(batch, f)[k] for f in EpisodeBatch.__dataclass_fields__))


def test_stacked_adam_is_fused_and_a_member_exports_a_run_of_its_own_that_continues_as_the_member():
    stacked = StackedReinforce(_members())
    assert all(opt.param_groups[0]["fused"] for opt in stacked.optimizers.values())
    stacked.update(_batch(0), [])
    k = 1
    # member k as a checkpoint and resume state: the layout's own state dict and optimizer states
    layout = _members()[k]
    layout.load_state_dict(stacked.member_state_dict(k))
    exported = stacked.member_optimizer_states(k)
    for name, state in exported.items():
        layout_optimizer = layout.optimizers()[name]
        for key in ("fused", "foreach"):  # the layout optimizer's own kernel choice, not the stack's
            assert state["param_groups"][0][key] == layout_optimizer.param_groups[0][key]
        layout_optimizer.load_state_dict(state)
    alone = StackedReinforce([layout])  # resumed as a run of its own (a stack of one)
    alone.load_optimizer_states([exported])
    batch = _batch(1)
    metrics = stacked.update(batch, [])
    alone_metrics = alone.update(stack_batches([_member(batch, k)]), [])
    # the stack of one runs the same kernels over another member count: equal up to float rounding
    assert metrics[k]["loss"] == pytest.approx(alone_metrics[0]["loss"], rel=1e-5, abs=1e-5)
    after = stacked.member_state_dict(k)
    for name, value in alone.member_state_dict(0).items():
        torch.testing.assert_close(after[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_loaded_optimizer_states_keep_the_fused_kernel_and_move_with_the_agent():
    source = StackedReinforce(_members())
    source.update(_batch(0), [])
    states = [source.member_optimizer_states(k) for k in range(K)]
    restored = StackedReinforce(_members())
    for k in range(K):
        restored.load_member_state_dict(k, source.member_state_dict(k))
    restored.load_optimizer_states(states)
    assert restored.optimizers["policy"].param_groups[0]["fused"]
    # to() moves the weights and the loaded optimizer state together (here to the same device type, so
    # CPU-only CI runs this path; on CUDA it is the move before training)
    restored.to("cpu")
    batch = _batch(1)
    expected, got = source.update(batch, []), restored.update(batch, [])
    for a, b in zip(expected, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-6)
    for k in range(K):
        for name, value in source.member_state_dict(k).items():
            torch.testing.assert_close(restored.member_state_dict(k)[name], value, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: moves a stack with Adam state to the GPU")
def test_to_cuda_moves_the_optimizer_state_with_the_weights():
    stacked = StackedReinforce(_members())
    stacked.update(_batch(0), [])
    stacked.to("cuda")
    for optimizer in stacked.optimizers.values():
        for state in optimizer.state.values():
            assert all(v.device.type == "cuda" for v in state.values() if torch.is_tensor(v))
    stacked.update(_batch(1).to("cuda"), [])  # would fail on a CPU moment


def test_random_phase_slates_are_each_members_own_draws():
    stacked = StackedReinforce(_members())
    slates = torch.randint(0, ITEMS, (K, 5, SLATE))
    stacked.begin_episodes(slates, torch.zeros(K, 5, SLATE))
    generators = [torch.Generator().manual_seed(s) for s in (4, 5, 4)]
    drawn, actions = stacked.act("random", generators)
    assert actions.shape == (K, 5, 0)
    for k, seed in enumerate((4, 5, 4)):
        expected = torch.randint(0, ITEMS, (5, SLATE), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(drawn[k], expected)
    assert not torch.equal(drawn[0], drawn[1])
    with pytest.raises(ValueError, match="unknown act mode"):
        stacked.act("sideways", generators)


def test_the_stacked_random_policy_shows_each_member_the_simulators_random_slates_for_its_users_and_seed():
    # Member k plays users 5, 0, 17 of seed seeds[k]; its slates at every step are those of the simulator's
    # own random policy run for those users and that seed alone (keyed the same way).
    users, seeds = torch.tensor([5, 0, 17]), [3, 8]
    envs = MemberEnvs([make_env("focused_topdown"), make_env("focused_topdown")])
    stacked = StackedRandom([RandomAgent(), RandomAgent()])
    first = envs.reset(users, seeds)
    stacked.begin_episodes(first.slate, first.clicks)
    shown = []
    for _ in range(4):
        slates, actions = stacked.act("explore", [], envs)
        assert actions.shape == (2, 3, 0) and stacked.belief_state().shape == (2, 3, 0)
        shown.append(envs.step(slates, oracle=False).observation.slate)
    for k, seed in enumerate(seeds):
        env, policy = make_env("focused_topdown"), RandomSlatePolicy()
        env.reset(users, seed)
        policy.reset(users, seed)
        for step in range(4):
            assert torch.equal(shown[step][k], env.step(policy.act(env), oracle=False).observation.slate)
    # new episodes take the new users' streams (not the previous episodes')
    first = envs.reset(users + 1, seeds)
    stacked.begin_episodes(first.slate, first.clicks)
    env, policy = make_env("focused_topdown"), RandomSlatePolicy()
    env.reset(users + 1, seeds[0])
    policy.reset(users + 1, seeds[0])
    assert torch.equal(stacked.act("greedy", [], envs)[0][0], policy.act(env))
