"""The agents that pick slates directly, in their stacked form (a lone run is a stack of one): SlateQ
(ε schedule and exploration, greedy = top-K of relevance × Q, the pairing quirk, the privileged target
against the simulator's click model, members without a click), REINFORCE+SoftMax (discounted returns,
its policy gradient, sampling from π) and the uniform random policy (keyed on user and seed).

Expected values come from hand formulas, the simulator, or the member layout's own nn modules run by
PyTorch directly (not the stacked kernels under test)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from slatectl.agents import AGENTS, AgentInputs
from slatectl.agents.base import Agent
from slatectl.agents.reinforce import discounted_returns
from slatectl.agents.slateq import SlateQ
from slatectl.sim.click_model import click_probabilities, relevance
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.episodes import stack_batches

from stacked_play import build, generators, gru_belief_states, play_one, stacked, update_one

N, S = 1000, 10


@pytest.fixture(scope="module")
def env():
    return make_env("focused_topdown")


@pytest.fixture(scope="module")
def batches(env):
    """One explore-mode batch per agent (E = 4 episodes × H = 100), played by a fresh stack of one."""
    return {name: play_one(env, stacked(name, build(name, env, seed=1)), torch.arange(4), 3, "explore")
            for name in ("slateq", "reinforce-softmax")}


def begin(agent, envs: MemberEnvs, users: int, seed: int):
    """Reset `users` users of every member with `seed` and start the agent's beliefs on them."""
    first = envs.reset(torch.arange(users), [seed] * envs.members)
    agent.begin_episodes(first.slate, first.clicks)
    return first


# -- SlateQ ---------------------------------------------------------------------------------------------

def test_slateq_epsilon_schedule_and_exploration(env):
    layout = build("slateq", env)
    assert isinstance(layout, SlateQ)
    agent = stacked("slateq", layout)
    for step in (0, 500, 1000, 2000, 10_000):
        agent.set_step(step)
        assert agent.epsilon == pytest.approx(0.01 + 0.99 * math.exp(-step / 1000))
    # the schedule lives in the `step` buffer, so it survives a checkpoint
    restored = stacked("slateq", build("slateq", env))
    restored.load_member_state_dict(0, agent.member_state_dict(0))
    assert restored.epsilon == agent.epsilon < 1.0
    envs = MemberEnvs([env])
    begin(agent, envs, 200, 4)
    greedy = agent.act("greedy", generators(0), envs)[0][0]
    agent.set_step(0)  # ε = 1: every slate random
    assert (agent.act("explore", generators(1), envs)[0][0] != greedy).any(1).float().mean() > 0.95
    agent.set_step(100_000)  # ε = 0.01
    assert (agent.act("explore", generators(2), envs)[0][0] == greedy).all(1).float().mean() > 0.9


def test_slateq_greedy_ranks_relevance_times_q(env):
    layout = build("slateq", env)
    agent = stacked("slateq", layout)
    envs = MemberEnvs([env])
    first = begin(agent, envs, 5, 4)
    slates, clicks = [first.slate[0]], [first.clicks[0]]
    for _ in range(8):  # let some boredom build up
        observation = envs.step(env.oracle_slate().view(1, 5, S), oracle=False).observation
        agent.observe(observation.slate, observation.clicks)
        slates.append(observation.slate[0])
        clicks.append(observation.clicks[0])
    assert bool(env.bored.any())
    belief = agent.belief_state()[0]
    expected_belief = gru_belief_states(layout.belief, torch.stack(slates, 1), torch.stack(clicks, 1))[:, -1]
    torch.testing.assert_close(belief, expected_belief, atol=1e-5, rtol=1e-4)  # batched vs nn.GRU kernels
    slate = agent.act("greedy", generators(0), envs)[0][0]
    with torch.no_grad():
        scores = env.relevances() * layout.q(belief)
    assert torch.equal(slate, scores.topk(S, dim=1).indices)
    # quirk (b): the reference's slice for bored topic b is [2b, 3b) (topic size 2)
    reference = stacked("slateq", build("slateq", env, act_relevance="reference-slice"))
    mask = reference.tensors["slice_mask"][0]
    assert torch.equal(mask[2].nonzero().flatten(), torch.tensor([4, 5]))
    assert mask[0].sum() == 0 and torch.equal(mask[3].nonzero().flatten(), torch.tensor([6, 7, 8]))
    zeroed = (env.bored.float() @ mask) > 0
    expected = relevance(env.item_scores(env.user.masked_fill(zeroed, 0.0)), env.config.offset, env.config.slope)
    assert torch.equal(reference.acting_relevances(env), expected)
    unmasked = stacked("slateq", build("slateq", env, act_relevance="unmasked")).acting_relevances(env)
    assert unmasked.shape == (5, N) and bool(((unmasked >= 0) & (unmasked <= 1)).all())
    assert torch.equal(unmasked, relevance(env.item_scores(env.user), env.config.offset, env.config.slope))


def test_slateq_target_pairs_state_with_next_clicks(env, batches):
    """Fixed pairing: Q(s_t, ·) is regressed on the first click of o_{t+1}; reference: of o_t."""
    batch = batches["slateq"]
    for quirk in (False, True):
        agent = stacked("slateq", build("slateq", env, pair_state_with_shown_clicks=quirk))
        metrics = update_one(agent, batch)
        clicks = batch.clicks[:, :100] if quirk else batch.clicks[:, 1:]
        assert metrics["kept_transitions"] == float((clicks.sum(-1) > 0).sum())


def test_slateq_target_is_one_when_gamma_zero(env, batches):
    agent = stacked("slateq", build("slateq", env, gamma=0.0))
    assert update_one(agent, batches["slateq"])["target_mean"] == pytest.approx(1.0)


def test_slateq_next_value_is_each_members_simulator_click_model_over_its_best_next_slate():
    """Σ_{k∈A'} P(k | s', A')·Q̄'(s', k) of a two-env stack, against each member's own env: its item
    table, position bias and diversity penalty (DivPen divides crowded slates' click probabilities)."""
    envs = [make_env("focused_topdown"), make_env("diffuse_divpen")]
    layouts = [build("slateq", e, seed=k) for k, e in enumerate(envs)]
    agent = stacked("slateq", *layouts)
    g = torch.Generator().manual_seed(1)
    n = 64
    s_next = torch.randn(2, n, 20, generator=g)
    users = torch.randn(2, n, 20, generator=g)
    users[:, : n // 2, :6] = 0.0  # half the users like topic 3 only (dims 6, 7): crowded slates A'
    users[:, : n // 2, 8:] = 0.0
    users = users / users.norm(dim=-1, keepdim=True)
    got = agent.next_value(s_next, users)
    for k, (e, layout) in enumerate(zip(envs, layouts)):
        cfg = e.config
        with torch.no_grad():
            q = layout.q_target(s_next[k])
        rel = relevance(users[k] @ e.item_embeddings.T / e.max_score, cfg.offset, cfg.slope)
        best = (rel * q).topk(S, dim=1).indices
        topics = e.item_topics[best]
        crowded = torch.stack([t.bincount(minlength=cfg.num_topics).max() >= cfg.diversity_threshold for t in topics])
        assert bool(crowded.any()) and not bool(crowded.all())
        probs = click_probabilities(rel.gather(1, best), topics, e.propensities, cfg.num_topics,
                                    cfg.diversity_threshold, cfg.diversity_penalty)
        # the stack's Q-net runs baddbmm where nn.Linear runs addmm: float rounding apart
        torch.testing.assert_close(got[k], (probs * q.gather(1, best)).sum(dim=1), atol=1e-5, rtol=1e-5)
    assert envs[1].config.diversity_penalty != 1.0


def test_slateq_member_without_a_click_skips_its_update(env, batches):
    """A member whose batch has no click keeps its weights, Adam moments, target net and update count
    (its schedule step still advances); the other member's update is the one it makes alone."""
    agent = stacked("slateq", build("slateq", env, seed=0), build("slateq", env, seed=1))
    both = stack_batches([batches["slateq"], batches["slateq"]])
    agent.update(both, generators(0, 1))  # one update first: Adam has moments
    before = [agent.member_state_dict(k) for k in (0, 1)]
    moments = agent.member_optimizer_states(1)["q"]["state"]
    alone = stacked("slateq", build("slateq", env, seed=0))
    alone.load_member_state_dict(0, before[0])
    alone.load_optimizer_states([agent.member_optimizer_states(0)])
    clicks = both.clicks.clone()
    clicks[1] = 0.0
    metrics = agent.update(dataclasses.replace(both, clicks=clicks), generators(0, 1))
    alone_metrics = update_one(alone, batches["slateq"])
    assert metrics[1]["kept_transitions"] == 0 and metrics[1]["q_loss"] == 0.0
    assert metrics[0]["q_loss"] == pytest.approx(alone_metrics["q_loss"], rel=1e-5, abs=1e-6)
    after = agent.member_state_dict(1)
    for name, value in before[1].items():
        if name != "step":
            assert torch.equal(after[name], value), name
    assert int(after["step"]) == int(before[1]["step"]) + 1
    for i, entry in agent.member_optimizer_states(1)["q"]["state"].items():
        assert torch.equal(entry["exp_avg"], moments[i]["exp_avg"])
        assert torch.equal(entry["exp_avg_sq"], moments[i]["exp_avg_sq"])
    assert not torch.equal(agent.member_state_dict(0)["q.0.weight"], before[0]["q.0.weight"])
    for name, value in alone.member_state_dict(0).items():  # K = 2 and K = 1 kernels: float rounding apart
        torch.testing.assert_close(agent.member_state_dict(0)[name], value, atol=1e-5, rtol=1e-4, msg=name)


# -- REINFORCE ------------------------------------------------------------------------------------------

def test_discounted_returns():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 3.0]])
    expected = torch.tensor([[1 + 0.8**2 * 2 + 0.8**3 * 3, 0.8 * 2 + 0.8**2 * 3, 2 + 0.8 * 3, 3.0]])
    assert torch.allclose(discounted_returns(rewards, 0.8), expected)
    stacked_rewards = torch.stack([rewards, 2 * rewards])  # (K, E, H): each row on its own
    assert torch.allclose(discounted_returns(stacked_rewards, 0.8), torch.stack([expected, 2 * expected]))


def test_reinforce_update_raises_log_prob_of_clicked_items(env, batches):
    batch = batches["reinforce-softmax"]
    agent = stacked("reinforce-softmax", build("reinforce-softmax", env))
    assert agent.updates_during_random_phase
    with torch.no_grad():
        before, mask = agent.clicked_item_log_terms(stack_batches([batch]))
    update_one(agent, batch)
    with torch.no_grad():
        after, _ = agent.clicked_item_log_terms(stack_batches([batch]))
    assert mask.sum() > 0
    assert (after - before)[mask].mean() > 0  # positive returns make the clicked items more likely
    # zero return → zero loss gradient → nothing moves
    zero = dataclasses.replace(batch, rewards=torch.zeros_like(batch.rewards))
    agent2 = stacked("reinforce-softmax", build("reinforce-softmax", env))
    params = {n: t.detach().clone() for n, t in agent2.tensors.items() if t.requires_grad}
    update_one(agent2, zero)
    assert all(torch.equal(params[n], agent2.tensors[n]) for n in params)


def test_reinforce_log_terms_are_the_layouts_policy_by_hand(env, batches):
    """log(1 − (1 − π(j_t|s_t))^K + 1e-6) for the first clicked item j_t of o_{t+1}, with π the layout's
    own nn modules (GRU belief, policy MLP) run by PyTorch."""
    batch = batches["reinforce-softmax"]
    layout = build("reinforce-softmax", env)
    log_terms, mask = stacked("reinforce-softmax", layout).clicked_item_log_terms(stack_batches([batch]))
    with torch.no_grad():
        pi = torch.softmax(layout.policy(gru_belief_states(layout.belief, batch.slates, batch.clicks)[:, :100]), dim=-1)
    clicks = batch.clicks[:, 1:]
    first = batch.slates[:, 1:].gather(2, clicks.argmax(-1, keepdim=True))
    expected = torch.log(1 - (1 - pi.gather(2, first).squeeze(2)) ** S + 1e-6)
    assert torch.equal(mask[0], clicks.sum(-1) > 0)
    torch.testing.assert_close(log_terms[0][mask[0]], expected[mask[0]], atol=1e-5, rtol=1e-4)


def test_reinforce_explore_samples_from_policy(env):
    layout = build("reinforce-softmax", env)
    with torch.no_grad():  # make the policy put almost all mass on item 7
        layout.policy[-1].weight.zero_()
        layout.policy[-1].bias.fill_(-30.0)
        layout.policy[-1].bias[7] = 30.0
    agent = stacked("reinforce-softmax", layout)
    envs = MemberEnvs([env])
    begin(agent, envs, 3, 1)
    assert bool((agent.act("explore", generators(0), envs)[0] == 7).all())
    assert bool((agent.act("greedy", generators(0), envs)[0][..., 0] == 7).all())


# -- the random policy ------------------------------------------------------------------------------------

def test_random_policy_is_a_registered_agent_keyed_on_user_and_seed(env):
    spec = AGENTS["random"]
    layout = spec.build(spec.params_cls(), env, AgentInputs())
    assert isinstance(layout, Agent) and layout.optimizers() == {} and not spec.trainable
    agent = stacked("random", layout)
    wide = play_one(env, agent, torch.arange(6), 4, "greedy")
    narrow = play_one(env, agent, torch.arange(3, 6), 4, "greedy")
    assert torch.equal(wide.slates[3:], narrow.slates)  # a user's slates do not depend on the batch
    assert agent.belief_state().shape == (1, 3, 0) and narrow.actions.shape == (3, env.config.episode_length, 0)
    assert all(len(set(slate.tolist())) == S for slate in narrow.slates[:, 1:].reshape(-1, S))  # distinct items
    other_seed = play_one(env, agent, torch.arange(3, 6), 5, "greedy")
    assert not torch.equal(other_seed.slates, narrow.slates)
