"""The stacked SAC kernels (slatectl/agents/sac.py `StackedSAC`) against the member layout's own modules
(nn.Sequential, nn.GRU, the GeMS decoder) evaluated by PyTorch, with member-specific random weights, so a
wrong index or layout fails here by name.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from slatectl.agents import AGENTS, AgentInputs, critic_pair, sac
from slatectl.agents.base import EpisodeBatch
from slatectl.agents.sac import LOG_STD_MAX, LOG_STD_MIN, SACParams, StackedSAC, build_sac_topk
from slatectl.config_tools import build_config
from slatectl.pretrain.gems_train import GeMSConfig, build_gems
from slatectl.train.config import default_config_dict
from slatectl.sim.factory import make_env
from stacked_play import gru_belief_states

K, E, H, SLATE, ITEMS = 3, 4, 6, 10, 1000


def _members(params: SACParams, count: int = K) -> list:
    env = make_env("focused_topdown")
    members = []
    for k in range(count):
        torch.manual_seed(100 + k)
        agent = build_sac_topk(params, env, torch.randn(ITEMS, 8))
        with torch.no_grad():  # targets differ from the online nets, as after some training
            for p in [*agent.q1_target.parameters(), *agent.q2_target.parameters()]:
                p.add_(0.1 * torch.randn_like(p))
        members.append(agent)
    return members


def _batch(count: int = K, seed: int = 0) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    slates = torch.randint(0, ITEMS, (count, E, H + 1, SLATE), generator=g)
    clicks = torch.randint(0, 2, (count, E, H + 1, SLATE), generator=g).float()
    actions = torch.randn(count, E, H, 8, generator=g)
    rewards = torch.rand(count, E, H, generator=g)
    return EpisodeBatch(slates, clicks, actions, slates[:, :, 1:], rewards, torch.randn(count, E, H + 1, 20, generator=g))


@pytest.mark.parametrize("hidden", [(256,), (32, 16)], ids=["one-hidden-layer", "two-hidden-layers"])
@pytest.mark.parametrize("target", [False, True], ids=["online", "target"])
def test_fused_q_pair_equals_each_members_q1_and_q2_with_their_gradients(hidden, target):
    members = _members(dataclasses.replace(SACParams(), hidden_qnet=hidden))
    stacked = StackedSAC(members)
    names = ("q1_target", "q2_target") if target else ("q1", "q2")
    for name in names:
        for i in range(0, len(members[0].get_submodule(name)), 2):
            for field in ("weight", "bias"):
                stacked.tensors[f"{name}.{i}.{field}"].requires_grad_(True)
    states = torch.randn(K, 50, 20)
    actions = torch.randn(K, 50, 8)
    q = stacked._q_pair(names, states, actions)  # (K, 50, 2)
    (q * torch.arange(1.0, 3.0)).sum().backward()  # different weights on the two columns
    for k, member in enumerate(members):
        x = torch.cat([states[k], actions[k]], dim=-1)
        for j, name in enumerate(names):
            net = member.get_submodule(name)
            for p in net.parameters():
                p.requires_grad_(True)
            expected = net(x).squeeze(-1)
            torch.testing.assert_close(q[k, :, j], expected, atol=1e-6, rtol=1e-6)
            net.zero_grad()
            ((j + 1.0) * expected).sum().backward()
            for p_name, p in net.named_parameters():
                torch.testing.assert_close(stacked.tensors[f"{name}.{p_name}"].grad[k], p.grad, atol=1e-5, rtol=1e-5)


def test_critic_value_is_the_minimum_of_the_two_members_nets():
    members = _members(SACParams())
    stacked = StackedSAC(members)
    states, actions = torch.randn(K, 30, 20), torch.randn(K, 30, 8)
    value = stacked._critic_value(states, actions)
    for k, member in enumerate(members):
        x = torch.cat([states[k], actions[k]], dim=-1)
        expected = torch.minimum(member.q1(x), member.q2(x)).squeeze(-1)
        torch.testing.assert_close(value[k], expected, atol=1e-6, rtol=1e-6)


def _actor_head(member, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The member's actor MLP by PyTorch: (mean, log std clamped to [LOG_STD_MIN, LOG_STD_MAX])."""
    mean, log_std = member.actor(states).chunk(2, dim=-1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def test_policy_head_with_folded_bias_equals_each_members_actor():
    members = _members(SACParams())
    stacked = StackedSAC(members)
    states = torch.randn(K, 40, 20)
    assert (LOG_STD_MIN, LOG_STD_MAX) == (-20.0, 2.0)
    for fold in (False, True):
        mean, log_std = stacked._policy_head(states, fold_bias=fold)
        for k, member in enumerate(members):
            m, s = _actor_head(member, states[k])
            torch.testing.assert_close(mean[k], m, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(log_std[k], s, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("belief", ["actor_belief", "critic_belief"])
def test_stacked_gru_unroll_equals_each_members_gru_belief(belief):
    members = _members(SACParams())
    stacked = StackedSAC(members)
    batch = _batch()
    states = stacked.encode_episodes(belief, batch.slates, batch.clicks)
    for k, member in enumerate(members):
        with torch.no_grad():
            expected = gru_belief_states(member.get_submodule(belief), batch.slates[k], batch.clicks[k])
        torch.testing.assert_close(states[k], expected, atol=1e-6, rtol=1e-5)


def test_member_chunked_update_equals_the_update_of_all_members_at_once(monkeypatch):
    """Splitting the training kernels into member chunks (CPU cache budget) changes no member's values."""
    batch = _batch()
    results = []
    for budget in (1 << 40, 1):  # all members in one block; one member per block
        monkeypatch.setattr(sac, "_CPU_BLOCK_BYTES", budget)
        stacked = StackedSAC(_members(SACParams()))
        chunks = []
        stacked._chunked(lambda members, x: chunks.append(members) or x, 512, torch.zeros(K, E * H, 1))
        assert len(chunks) == (1 if budget > 1 else K)
        generators = [torch.Generator().manual_seed(7 + k) for k in range(K)]
        metrics = [stacked.update(batch, generators) for _ in range(2)]
        results.append((metrics, {n: t.detach().clone() for n, t in stacked.tensors.items()}))
    (metrics_a, weights_a), (metrics_b, weights_b) = results
    for step_a, step_b in zip(metrics_a, metrics_b):
        for member_a, member_b in zip(step_a, step_b):
            assert member_a.keys() == member_b.keys()
            for key in member_a:
                assert member_b[key] == pytest.approx(member_a[key], rel=1e-5, abs=1e-6), key
    for name, value in weights_a.items():
        torch.testing.assert_close(weights_b[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_update_returns_each_members_metrics_and_counts_updates_on_the_host():
    stacked = StackedSAC(_members(SACParams()))
    generators = [torch.Generator().manual_seed(k) for k in range(K)]
    metrics = stacked.update(_batch(), generators)
    assert len(metrics) == K
    assert {"critic_loss", "actor_loss", "alpha", "q_mean", "log_pi", "alpha_loss"} == set(metrics[0])
    assert all(isinstance(v, float) for m in metrics for v in m.values())
    assert len({m["critic_loss"] for m in metrics}) == K  # members differ
    assert stacked._update_count == int(stacked.tensors["update_count"][0]) == 1


def test_member_optimizer_states_keep_the_layouts_kernel_settings_and_resume_as_a_run_of_one():
    """The stacked optimizers use fused Adam; what a member exports is an ordinary per-run optimizer state
    (the layout's own foreach/fused settings) that the layout's optimizers load, and a run of one resumed
    from the member's weights and optimizer states continues exactly as the member."""
    members = _members(SACParams())
    stacked = StackedSAC(members)
    assert all(opt.param_groups[0]["fused"] for opt in stacked.optimizers.values())
    generators = [torch.Generator().manual_seed(k) for k in range(K)]
    stacked.update(_batch(), generators)
    k = 1
    layout = _members(SACParams())[k]
    layout.load_state_dict(stacked.member_state_dict(k))
    for name, state in stacked.member_optimizer_states(k).items():
        layout_optimizer = layout.optimizers()[name]
        for key in ("fused", "foreach"):
            assert state["param_groups"][0][key] == layout_optimizer.param_groups[0][key]
        layout_optimizer.load_state_dict(state)
    resumed = StackedSAC([layout])
    resumed.load_optimizer_states([{name: opt.state_dict() for name, opt in layout.optimizers().items()}])
    # one more update from the same batch and noise: the member and the resumed run of one move alike
    batch = _batch(seed=1)
    stacked.update(batch, [torch.Generator().manual_seed(123) for _ in range(K)])
    resumed.update(EpisodeBatch(*(getattr(batch, f)[k:k + 1] for f in EpisodeBatch.__dataclass_fields__)),
                   [torch.Generator().manual_seed(123)])
    after = stacked.member_state_dict(k)
    for name, value in resumed.member_state_dict(0).items():
        torch.testing.assert_close(after[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_critic_pair_layers_backward_matches_finite_differences():
    """The pair's input and output layers (slatectl/agents/critic_pair.py): values by hand, hand-written
    backward against finite differences, with every input needing its gradient and with each alone."""
    g = torch.Generator().manual_seed(3)
    f64 = {"generator": g, "dtype": torch.float64}
    states, actions = torch.randn(2, 7, 3, **f64), torch.randn(2, 7, 4, **f64)
    first = torch.randn(2, 10, 3 + 4 + 1, **f64)
    hidden, weight, bias = torch.randn(2, 7, 2 * 5, **f64), torch.randn(2, 2, 5, **f64), torch.randn(2, 2, **f64)
    x = torch.cat([states, actions, torch.ones(2, 7, 1, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close(critic_pair.input_layer(states, actions, first), x @ first.transpose(1, 2))
    q = critic_pair.output_layer(hidden, weight, bias)
    for j, half in enumerate((slice(0, 5), slice(5, 10))):  # critic j reads only its own half
        torch.testing.assert_close(q[..., j], (hidden[..., half] * weight[:, j].unsqueeze(1)).sum(-1) + bias[:, j:j + 1])
    for layer, inputs in ((critic_pair.input_layer, (states, actions, first)),
                          (critic_pair.output_layer, (hidden, weight, bias))):
        for needs in ((True, True, True), (True, False, False), (False, True, False), (False, False, True)):
            args = tuple(t.clone().requires_grad_(n) for t, n in zip(inputs, needs))
            assert torch.autograd.gradcheck(layer, args, eps=1e-6, atol=1e-7), (layer.__name__, needs)


def _gems_members(count: int = K) -> list:
    env = make_env("focused_topdown")
    params = build_config(AGENTS["sac-gems"].params_cls, default_config_dict("sac-gems")["agent"])
    members = []
    for k in range(count):
        torch.manual_seed(200 + k)
        gems = build_gems(GeMSConfig()).eval()
        bounds = (torch.zeros(GeMSConfig().latent_dim), torch.full((GeMSConfig().latent_dim,), 2.0))
        members.append(AGENTS["sac-gems"].build(params, env, AgentInputs(gems=gems, gems_bounds=bounds)))
    return members


@pytest.mark.parametrize("users", [5, 300])
def test_gems_ranking_is_each_members_own_and_follows_a_loaded_member_state(users):
    """Stacked GeMS ranking (cached (K, in, out) copies of the frozen decoder) equals each member's own
    GeMS model's `rank` (its decoder by PyTorch, then the argmax item per slot), also after member 1's
    weights are replaced by another agent's (the copy is made again). 5 users: batched score blocks;
    300 users (3,000 slot queries per member, as in collection): `first_argmax_of_products` per member."""
    assert 5 * 10 < sac._RANK_CHUNK_ROWS <= 300 * 10
    members = _gems_members()
    stacked = StackedSAC(members)
    actions = torch.rand(K, users, members[0].action_dim, generator=torch.Generator().manual_seed(0)) * 2
    for k in range(K):
        assert torch.equal(stacked.rank(actions)[k], members[k].ranker.gems.rank(actions[k]))
    other = _gems_members(K + 1)[K]
    stacked.load_member_state_dict(1, other.state_dict())
    slates = stacked.rank(actions)
    assert torch.equal(slates[1], other.ranker.gems.rank(actions[1]))
    assert not torch.equal(slates[1], members[1].ranker.gems.rank(actions[1]))
    assert torch.equal(slates[0], members[0].ranker.gems.rank(actions[0]))


def test_acting_reads_the_current_weights_after_updates_loads_and_moved_storage():
    """Acting (no autograd) keeps its weight views between calls (`_linear_operands`); they must follow
    in-place updates and loads, and be made again when the storage is replaced (as `to` does)."""
    members = _members(SACParams())
    stacked = StackedSAC(members)
    states = torch.randn(K, 4, members[0].params.belief_state_dim, generator=torch.Generator().manual_seed(5))

    def acting_mean() -> torch.Tensor:
        with torch.no_grad():
            return stacked._policy_head(states)[0]

    def expected(k: int, agent) -> torch.Tensor:
        return _actor_head(agent, states[k])[0]

    acting_mean()  # the views are made here
    stacked.update(_batch(), [torch.Generator().manual_seed(k) for k in range(K)])  # in-place Adam steps
    for k in range(K):
        member = _members(SACParams())[k]
        member.load_state_dict(stacked.member_state_dict(k))
        torch.testing.assert_close(acting_mean()[k], expected(k, member))
    other = _members(SACParams(), K + 1)[K]
    stacked.load_member_state_dict(2, other.state_dict())
    torch.testing.assert_close(acting_mean()[2], expected(2, other))
    with torch.no_grad():  # new storage, as `to(device)` gives
        for tensor in stacked.tensors.values():
            tensor.data = tensor.data.clone() * 2
    doubled = _members(SACParams())[0]
    doubled.load_state_dict(stacked.member_state_dict(0))
    torch.testing.assert_close(acting_mean()[0], expected(0, doubled))
