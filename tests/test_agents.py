"""The six agents on a real TopicRec: acting, one update, rankers, schedules and small learning checks."""

from __future__ import annotations

import dataclasses
import math
from importlib import resources

import pytest
import torch
import yaml

from slatectl.agents import AGENTS, AgentInputs, trainable_agents
from slatectl.agents.base import EpisodeBatch
from slatectl.agents.belief import GRUBelief
from slatectl.agents.rankers import GeMSRanker, TopKRanker
from slatectl.agents.sac import SACAgent
from slatectl.agents.wknn import WolpertingerSAC
from slatectl.config_tools import build_config
from slatectl.errors import BadInput
from slatectl.sim.factory import make_env
from slatectl.sim.topicrec import Observation

NAMES = ["sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn", "slateq", "reinforce-softmax"]
N, K = 1000, 10


@pytest.fixture(scope="module")
def env():
    return make_env("focused_topdown")


def _stand_in_gems():
    """A small randomly initialised GeMS (the real class when present, else a stand-in with its API)."""
    try:
        from slatectl.pretrain.gems import GeMS

        model = GeMS(num_items=N, slate_size=K, item_dim=20, latent_dim=32)
    except ImportError:  # pragma: no cover - only before pretrain/gems.py exists
        class GeMS(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.num_items, self.slate_size, self.latent_dim = N, K, 32
                self.item_embeddings = torch.nn.Embedding(N, 20)
                self.head = torch.nn.Linear(32, K * 20)

            @torch.no_grad()
            def rank(self, z):
                return (self.head(z).view(-1, K, 20) @ self.item_embeddings.weight.T).argmax(-1)

        model = GeMS()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(7)
    return AgentInputs(gems=_stand_in_gems(), gems_bounds=(torch.zeros(32) + 0.1, torch.full((32,), 2.0)),
                       mf=0.3 * torch.randn(N, 20, generator=g))


def build(name, env, inputs, seed=0, **overrides):
    torch.manual_seed(seed)
    spec = AGENTS[name]
    params = dataclasses.replace(spec.params_cls(), **overrides)
    params.validate()
    return spec.build(params, env, inputs)


def rollout(env, agent, episodes=4, mode="explore", seed=3) -> EpisodeBatch:
    """Step the env with the agent for one whole episode of B users; returns the EpisodeBatch layout."""
    H = env.config.episode_length
    first = env.reset(torch.arange(episodes), seed)
    slates, clicks, users = [first.slate], [first.clicks.float()], [env.user.clone()]
    actions, rewards = [], []
    agent.begin_episodes(first)
    for _ in range(H):
        slate, action = agent.act(env, mode)
        result = env.step(slate)
        agent.observe(result.observation)
        slates.append(result.observation.slate)
        clicks.append(result.observation.clicks.float())
        users.append(result.user_state)
        actions.append(action.float())
        rewards.append(result.reward)
    slates_t = torch.stack(slates, 1)
    return EpisodeBatch(slates=slates_t, clicks=torch.stack(clicks, 1), actions=torch.stack(actions, 1),
                        rec_slates=slates_t[:, 1:], rewards=torch.stack(rewards, 1), user_states=torch.stack(users, 1))


@pytest.fixture(scope="module")
def batches(env, inputs):
    """One explore-mode batch per agent (E = 4 episodes × H = 100), collected by a fresh agent."""
    return {name: rollout(env, build(name, env, inputs, seed=1)) for name in NAMES}


def trainable(agent) -> dict[str, torch.Tensor]:
    ids = {id(p) for opt in agent.optimizers().values() for group in opt.param_groups for p in group["params"]}
    return {n: p.detach().clone() for n, p in agent.named_parameters() if id(p) in ids}


# -- registry and configs -------------------------------------------------------------------------------

def test_registry_keys_and_yaml_defaults():
    assert trainable_agents() == NAMES
    assert list(AGENTS) == NAMES + ["random"] and not AGENTS["random"].trainable
    for name, spec in AGENTS.items():
        data = yaml.safe_load(resources.files("slatectl.configs").joinpath("agents", f"{name}.yaml").read_text())
        params = build_config(spec.params_cls, data)
        assert params == spec.params_cls(), name  # the YAML holds exactly the defaults
        assert {f.name for f in dataclasses.fields(spec.params_cls)} == set(data), name
        assert params.capacity >= params.batch_size >= 1
        assert set(spec.needs) <= {"gems", "mf"}
    assert AGENTS["sac-gems"].needs == ("gems",) and AGENTS["sac-topk-mf"].needs == ("mf",)
    wknn = AGENTS["sac-wknn"]
    assert wknn.needs_for(wknn.params_cls()) == ()
    assert wknn.needs_for(dataclasses.replace(wknn.params_cls(), item_table="mf")) == ("mf",)


def test_reference_values():
    sac = AGENTS["sac-gems"].params_cls()
    assert (sac.gamma, sac.tau, sac.q_lr, sac.pi_lr, sac.alpha, sac.alpha_lr, sac.auto_entropy) == (0.8, 0.002, 1e-3, 3e-3, 0.2, 1e-3, True)
    assert (sac.capacity, sac.batch_size, tuple(sac.hidden_qnet), tuple(sac.hidden_pinet)) == (10000, 20, (256,), (256,))
    assert (sac.belief_state_dim, sac.item_embedd_dim) == (20, 20)
    rf = AGENTS["reinforce-softmax"].params_cls()
    assert (rf.capacity, rf.batch_size, rf.pi_lr, rf.gamma) == (1, 1, 3e-3, 0.8)
    sq = AGENTS["slateq"].params_cls()
    assert (sq.capacity, sq.batch_size, sq.q_lr, sq.tau, sq.gamma) == (10000, 20, 1e-3, 0.002, 0.8)


@pytest.mark.parametrize("name,changes", [
    ("sac-gems", {"gamma": 1.5}), ("sac-topk-ideal", {"batch_size": 0}), ("sac-topk-mf", {"tau": 0.0}),
    ("sac-wknn", {"proto_layout": "diagonal"}), ("slateq", {"q_lr": -1.0}),
    ("reinforce-softmax", {"capacity": 10}), ("sac-gems", {"hidden_qnet": [0]}),
])
def test_invalid_params_raise_badinput(name, changes):
    data = {**dataclasses.asdict(AGENTS[name].params_cls()), **changes}
    with pytest.raises(BadInput):
        build_config(AGENTS[name].params_cls, data)
    with pytest.raises(BadInput):
        build_config(AGENTS[name].params_cls, {"no_such_key": 1})


def test_missing_inputs_raise_badinput(env):
    with pytest.raises(BadInput, match="gems"):
        AGENTS["sac-gems"].build(AGENTS["sac-gems"].params_cls(), env, AgentInputs())
    with pytest.raises(BadInput, match="mf"):
        AGENTS["sac-topk-mf"].build(AGENTS["sac-topk-mf"].params_cls(), env, AgentInputs())
    with pytest.raises(BadInput):
        AGENTS["sac-topk-mf"].build(AGENTS["sac-topk-mf"].params_cls(), env, AgentInputs(mf=torch.zeros(10, 20)))


# -- acting ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_act_all_modes(name, env, inputs):
    agent = build(name, env, inputs)
    B = 3
    agent.begin_episodes(env.reset(torch.arange(B), 11))
    for step in range(4):
        for mode in ("random", "explore", "greedy"):
            slate, action = agent.act(env, mode)
            assert slate.shape == (B, K) and slate.dtype == torch.int64
            assert int(slate.min()) >= 0 and int(slate.max()) < N
            assert action.shape == (B, agent.action_dim) and action.dtype == torch.float32
            assert bool(torch.isfinite(action).all())
        agent.observe(env.step(slate).observation)
    expected_dim = {"sac-gems": 32, "sac-topk-ideal": 20, "sac-topk-mf": 20, "sac-wknn": 200, "slateq": 0, "reinforce-softmax": 0}
    assert agent.action_dim == expected_dim[name]


@pytest.mark.parametrize("name", ["sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn"])
def test_sac_actions_in_box_and_greedy_deterministic(name, env, inputs):
    agent = build(name, env, inputs)
    agent.begin_episodes(env.reset(torch.arange(64), 5))
    low, high = agent.action_center - agent.action_scale, agent.action_center + agent.action_scale
    g1, g2 = agent.act(env, "greedy"), agent.act(env, "greedy")
    assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
    e1, e2 = agent.act(env, "explore"), agent.act(env, "explore")
    assert not torch.equal(e1[1], e2[1])
    for action in (g1[1], e1[1]):
        assert bool((action >= low - 1e-5).all() and (action <= high + 1e-5).all())
    if name != "sac-wknn":  # WkNN's random phase draws random slates, not actions
        r = agent.act(env, "random")[1]
        half = agent.action_scale / 2
        assert bool((r >= agent.action_center - half - 1e-6).all() and (r <= agent.action_center + half + 1e-6).all())


def test_topk_ranker_returns_true_top10():
    g = torch.Generator().manual_seed(3)
    table, queries = torch.randn(N, 20, generator=g), torch.randn(16, 20, generator=g)
    slates = TopKRanker(table).rank(queries)
    expected = torch.argsort(queries @ table.T, dim=1, descending=True)[:, :K]
    assert torch.equal(slates, expected)
    assert all(len(set(row.tolist())) == K for row in slates)
    center, scale = TopKRanker(table).action_bounds()
    assert torch.allclose(center - scale, table.min(0).values) and torch.allclose(center + scale, table.max(0).values)


def test_gems_ranker_is_argmax_per_slot(inputs):
    gems = inputs.gems
    z = torch.randn(5, gems.latent_dim)
    ranker = GeMSRanker(gems)
    ranker.train()
    assert not ranker.training and not gems.training
    if hasattr(gems, "decode"):
        logits, _ = gems.decode(z)
        assert torch.equal(ranker.rank(z), logits.argmax(-1))


def test_topk_ideal_uses_env_table(env, inputs):
    agent = build("sac-topk-ideal", env, inputs)
    assert torch.equal(agent.ranker.item_embeddings, env.item_embeddings)
    agent_mf = build("sac-topk-mf", env, inputs)
    assert torch.equal(agent_mf.ranker.item_embeddings, inputs.mf)


# -- belief ---------------------------------------------------------------------------------------------

def test_belief_online_equals_episode_encoding(env, batches):
    torch.manual_seed(0)
    belief = GRUBelief()
    batch = batches["sac-topk-ideal"]
    with torch.no_grad():
        offline = belief.encode_episodes(batch.slates, batch.clicks)
        online = [belief.reset(Observation(batch.slates[:, 0], batch.clicks[:, 0].long()))]
        for t in range(1, batch.slates.shape[1]):
            online.append(belief.step(Observation(batch.slates[:, t], batch.clicks[:, t].long())))
    assert offline.shape == (4, 101, 20)
    assert torch.allclose(torch.stack(online, 1), offline, atol=1e-5)
    # the input layout: per slot the item embedding then its click bit
    features = belief.observation_features(batch.slates[:1, 0], batch.clicks[:1, 0])
    assert features.shape == (1, 210)
    assert torch.equal(features[0, :20], belief.item_embeddings.weight[batch.slates[0, 0, 0]].detach())
    assert features[0, 20] == batch.clicks[0, 0, 0]


# -- updates --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_update_finite_and_changes_trainable_params(name, env, inputs, batches):
    agent = build(name, env, inputs)
    before = trainable(agent)
    frozen_before = {n: t.clone() for n, t in agent.state_dict().items() if n.startswith("ranker.") or n == "item_table"}
    metrics = agent.update(batches[name], lambda loss: loss.backward())
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    after = trainable(agent)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    for opt_name, opt in agent.optimizers().items():
        ids = {id(p) for group in opt.param_groups for p in group["params"]}
        names = {n for n, p in agent.named_parameters() if id(p) in ids}
        assert names & changed, f"{name}: optimizer {opt_name} changed nothing"
    # the belief modules' item tables are trained too
    assert any("belief" in n and "item_embeddings" in n for n in changed)
    for n, t in frozen_before.items():
        assert torch.equal(agent.state_dict()[n], t), f"frozen {n} changed"


@pytest.mark.parametrize("name", ["sac-topk-ideal", "sac-wknn", "slateq"])
def test_targets_move_by_polyak(name, env, inputs, batches):
    agent = build(name, env, inputs)
    pairs = [("q1", "q1_target"), ("q2", "q2_target")] if isinstance(agent, SACAgent) else [("q", "q_target")]
    old = {t: [p.detach().clone() for p in getattr(agent, t).parameters()] for _, t in pairs}
    for online, target in pairs:
        assert all(torch.equal(a, b) for a, b in zip(getattr(agent, online).parameters(), old[target]))
    agent.update(batches[name])
    tau = agent.params.tau
    for online, target in pairs:
        for p_online, p_target, p_old in zip(getattr(agent, online).parameters(), getattr(agent, target).parameters(), old[target]):
            assert torch.allclose(p_target, (1 - tau) * p_old + tau * p_online, atol=1e-7)
            assert not p_target.requires_grad
        assert any(not torch.equal(p, q) for p, q in zip(getattr(agent, target).parameters(), old[target]))


def test_sac_alpha_schedule(env, inputs, batches):
    agent = build("sac-topk-ideal", env, inputs)
    assert float(agent.alpha) == pytest.approx(0.2)  # configured α for the first update only
    m1 = agent.update(batches["sac-topk-ideal"])
    assert m1["alpha"] == pytest.approx(0.2)
    assert float(agent.alpha) == pytest.approx(float(agent.log_alpha.detach().exp()))
    assert abs(float(agent.alpha) - 1.0) < 0.01  # log α starts at 0
    m2 = agent.update(batches["sac-topk-ideal"])
    assert m2["alpha"] == pytest.approx(float(agent.log_alpha.detach().exp()), abs=0.01)
    assert agent.target_entropy == -20.0
    fixed = build("sac-topk-ideal", env, inputs, auto_entropy=False)
    fixed.update(batches["sac-topk-ideal"])
    assert float(fixed.alpha) == pytest.approx(0.2) and "alpha" not in fixed.optimizers()


def test_sac_critic_loss_decreases_on_fixed_batch(env, inputs, batches):
    agent = build("sac-topk-ideal", env, inputs)
    losses = [agent.update(batches["sac-topk-ideal"])["critic_loss"] for _ in range(50)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, env, inputs, batches):
    agent = build(name, env, inputs, seed=0)
    agent.update(batches[name])
    clone = build(name, env, inputs, seed=123)
    clone.load_state_dict(agent.state_dict())
    for a in (agent, clone):
        a.begin_episodes(env.reset(torch.arange(3), 9))
    assert torch.equal(agent.act(env, "greedy")[0], clone.act(env, "greedy")[0])


# -- WkNN -----------------------------------------------------------------------------------------------

def test_wknn_layouts_and_candidates(env, inputs):
    for layout in ("slot-major", "dim-major"):
        agent = build("sac-wknn", env, inputs, proto_layout=layout)
        assert isinstance(agent, WolpertingerSAC)
        vectors = torch.randn(4, K, 20)
        assert torch.equal(agent._queries(agent._as_proto(vectors)), vectors)
        # a proto-action made of item embeddings finds those items as nearest candidates
        items = torch.randint(0, N, (4, K))
        cand = agent.candidates(agent._as_proto(agent.item_table[items]))
        assert cand.shape == (4, K, 10) and torch.equal(cand[..., 0], items)
        slate = agent.wolpertinger_slate(agent._as_proto(agent.item_table[items]), torch.randn(4, 20))
        assert bool((slate[..., None] == cand).any(-1).all())  # every slot picks one of its candidates
    # quirk (i): the default table is a frozen copy of the critic belief's initial table
    agent = build("sac-wknn", env, inputs)
    assert torch.equal(agent.item_table, agent.critic_belief.item_embeddings.weight.detach())
    assert torch.equal(build("sac-wknn", env, inputs, item_table="mf").item_table, inputs.mf)
    assert torch.equal(build("sac-wknn", env, inputs, item_table="ideal").item_table, env.item_embeddings)
    with pytest.raises(BadInput):
        AGENTS["sac-wknn"].build(dataclasses.replace(AGENTS["sac-wknn"].params_cls(), item_table="mf"), env, AgentInputs())


def test_wknn_critic_action_quirk(env, inputs, batches):
    batch = batches["sac-wknn"]
    fixed = build("sac-wknn", env, inputs)
    quirk = build("sac-wknn", env, inputs, critic_on_shown_slate=True)
    assert torch.equal(fixed.critic_actions(batch), fixed.slate_embedding(batch.rec_slates))
    assert torch.equal(quirk.critic_actions(batch), quirk.slate_embedding(batch.slates[:, :100]))
    emb = fixed.slate_embedding(batch.rec_slates[:1, :1])
    assert torch.equal(emb[0, 0, 20:40], fixed.item_table[batch.rec_slates[0, 0, 1]])  # slot-major


def test_wknn_random_phase_draws_random_slates(env, inputs):
    agent = build("sac-wknn", env, inputs)
    agent.begin_episodes(env.reset(torch.arange(8), 2))
    slate, action = agent.act(env, "random")
    assert torch.equal(agent._queries(action), agent.item_table[slate])


# -- exact computations -----------------------------------------------------------------------------

def test_sac_critic_target_by_hand(env, inputs, batches):
    """α = 0 and constant target critics: y = r + γ(1 − done)·c, loss = ½(MSE(Q1, y) + MSE(Q2, y))."""
    batch = batches["sac-topk-ideal"]
    agent = build("sac-topk-ideal", env, inputs, alpha=0.0, auto_entropy=False)
    c = 5.0
    with torch.no_grad():
        for target in (agent.q1_target, agent.q2_target):
            target[-1].weight.zero_()
            target[-1].bias.fill_(c)
        states = agent.critic_belief.encode_episodes(batch.slates, batch.clicks)[:, :100]
        x = torch.cat([states, batch.actions], dim=-1)
        done = torch.zeros(4, 100)
        done[:, -1] = 1
        y = batch.rewards + 0.8 * (1 - done) * c
        expected = 0.5 * ((agent.q1(x).squeeze(-1) - y).pow(2).mean() + (agent.q2(x).squeeze(-1) - y).pow(2).mean())
    metrics = agent.update(batch)
    assert metrics["critic_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_sac_log_prob_matches_tanh_gaussian(env, inputs):
    agent = build("sac-gems", env, inputs)
    states = torch.randn(16, 20)
    torch.manual_seed(5)
    action, log_prob = agent.sample_action(states)
    mean, log_std = agent._policy_head(states)
    u = torch.atanh(((action - agent.action_center) / agent.action_scale).clamp(-1 + 1e-6, 1 - 1e-6))
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6).sum(-1)
    assert torch.allclose(log_prob, expected, atol=1e-2)


def test_wknn_picks_the_target_q1_best_candidate(env, inputs):
    agent = build("sac-wknn", env, inputs)
    w = torch.randn(20)

    class SlotPreference(torch.nn.Module):  # Q(s, slate) = Σ_slots ⟨w, e_slot⟩
        def forward(self, x):
            return (x[..., 20:].reshape(*x.shape[:-1], K, 20) @ w).sum(-1, keepdim=True)

    agent.q1_target = SlotPreference()
    proto = torch.randn(6, K * 20)
    cand = agent.candidates(proto)
    expected = cand.gather(2, (agent.item_table[cand] @ w).argmax(-1, keepdim=True)).squeeze(-1)
    assert torch.equal(agent.wolpertinger_slate(proto, torch.randn(6, 20)), expected)


# -- the contract shared by every agent -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_agent_follows_the_step_schedule_contract(name, env, inputs):
    agent = build(name, env, inputs)
    agent.set_step(1234)
    assert agent.training_step == 1234
    if name == "slateq":  # the schedule lives in a buffer, so it survives a checkpoint
        restored = build(name, env, inputs)
        restored.load_state_dict(agent.state_dict())
        assert restored.epsilon == agent.epsilon < 1.0


def test_click_model_follows_its_inputs_device():
    from slatectl.sim.click_model import click_probabilities, examination_propensities

    propensities = examination_propensities("mixPBM", K, device="meta")
    assert propensities.device.type == "meta"
    probs = click_probabilities(torch.ones(2, K, device="meta"), torch.zeros(2, K, dtype=torch.int64, device="meta"),
                                propensities, 10, 4, 3.0)
    assert probs.device.type == "meta" and probs.shape == (2, K)
