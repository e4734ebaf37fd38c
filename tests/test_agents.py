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
from slatectl.agents.rankers import GeMSRanker
from slatectl.agents.sac import SACAgent, SACParams, StackedSAC, build_sac_topk
from slatectl.agents.wknn import StackedWkNN, WolpertingerSAC
from slatectl.config_tools import build_config
from slatectl.errors import BadInput
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.episodes import begin_member_episodes
from stacked_play import build, generators, gru_belief_states, play_one, stacked, update_one

NAMES = ["sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn", "slateq", "reinforce-softmax"]
N, K = 1000, 10


@pytest.fixture(scope="module")
def env():
    return make_env("focused_topdown")


def _stand_in_gems():
    """A small randomly initialised GeMS, frozen."""
    from slatectl.pretrain.gems import GeMS

    model = GeMS(num_items=N, slate_size=K, item_dim=20, latent_dim=32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(7)
    return AgentInputs(gems=_stand_in_gems(), gems_bounds=(torch.zeros(32) + 0.1, torch.full((32,), 2.0)),
                       mf=0.3 * torch.randn(N, 20, generator=g))


def start(env, agent, users: int, seed: int) -> MemberEnvs:
    """Begin `users` episodes of a stack of one on `env` (reset seed `seed`), as the trainer does."""
    envs = MemberEnvs([env])
    begin_member_episodes(envs, agent, torch.arange(users), [seed])
    return envs


@pytest.fixture(scope="module")
def batches(env, inputs):
    """One explore-mode batch per agent (E = 4 episodes × H = 100), played by a fresh agent's stack of one."""
    return {name: play_one(env, stacked(name, build(name, env, inputs, seed=1)), torch.arange(4), 3, "explore")
            for name in NAMES}


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
    layout = build(name, env, inputs)
    agent = stacked(name, layout)
    B = 3
    envs, draws = start(env, agent, B, 11), generators(0)
    for step in range(4):
        for mode in ("random", "explore", "greedy"):
            slate, action = agent.act(mode, draws, envs)
            assert slate.shape == (1, B, K) and slate.dtype == torch.int64
            assert int(slate.min()) >= 0 and int(slate.max()) < N
            assert action.shape == (1, B, agent.action_dim) and action.dtype == torch.float32
            assert bool(torch.isfinite(action).all())
        observation = envs.step(slate).observation
        agent.observe(observation.slate, observation.clicks)
    expected_dim = {"sac-gems": 32, "sac-topk-ideal": 20, "sac-topk-mf": 20, "sac-wknn": 200, "slateq": 0, "reinforce-softmax": 0}
    assert agent.action_dim == layout.action_dim == expected_dim[name]


@pytest.mark.parametrize("name", ["sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn"])
def test_sac_actions_in_box_and_greedy_deterministic(name, env, inputs):
    layout = build(name, env, inputs)
    agent = stacked(name, layout)
    envs, draws = start(env, agent, 64, 5), generators(0)
    center, scale = layout.action_center, layout.action_scale
    low, high = center - scale, center + scale
    g1, g2 = agent.act("greedy", draws, envs), agent.act("greedy", draws, envs)
    assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
    e1, e2 = agent.act("explore", draws, envs), agent.act("explore", draws, envs)
    assert not torch.equal(e1[1], e2[1])
    for action in (g1[1], e1[1]):
        assert bool((action >= low - 1e-5).all() and (action <= high + 1e-5).all())
    if name != "sac-wknn":  # WkNN's random phase draws random slates, not actions
        r = agent.act("random", draws, envs)[1]
        half = scale / 2
        assert bool((r >= center - half - 1e-6).all() and (r <= center + half + 1e-6).all())


def test_topk_ranker_returns_true_top10(env):
    g = torch.Generator().manual_seed(3)
    table, queries = torch.randn(N, 20, generator=g), torch.randn(16, 20, generator=g)
    layout = build_sac_topk(SACParams(), env, table)
    slates = StackedSAC([layout]).rank(queries[None])[0]
    expected = torch.argsort(queries @ table.T, dim=1, descending=True)[:, :K]
    assert torch.equal(slates, expected)
    assert all(len(set(row.tolist())) == K for row in slates)
    center, scale = layout.action_center, layout.action_scale  # the box: the table's per-dimension range
    assert torch.allclose(center - scale, table.min(0).values) and torch.allclose(center + scale, table.max(0).values)


def test_gems_ranker_is_argmax_per_slot(env, inputs):
    gems = inputs.gems
    z = torch.randn(5, gems.latent_dim)
    layout = build("sac-gems", env, inputs)
    assert isinstance(layout.ranker, GeMSRanker) and layout.ranker.gems is gems
    layout.train()
    assert not layout.ranker.training and not gems.training
    logits, _ = gems.decode(z)
    assert torch.equal(stacked("sac-gems", layout).rank(z[None])[0], logits.argmax(-1))


def test_topk_ideal_uses_env_table(env, inputs):
    agent = build("sac-topk-ideal", env, inputs)
    assert torch.equal(agent.ranker.item_embeddings, env.item_embeddings)
    agent_mf = build("sac-topk-mf", env, inputs)
    assert torch.equal(agent_mf.ranker.item_embeddings, inputs.mf)


# -- belief ---------------------------------------------------------------------------------------------

def test_belief_online_equals_episode_encoding_and_the_layouts_own_gru(env, inputs, batches):
    """The online belief (one GRU cell per observation), the episode encoding (the hand-written unroll) and
    the layout's own nn.GRU run by PyTorch over the episodes agree."""
    layout = build("sac-topk-ideal", env, inputs)
    agent = stacked("sac-topk-ideal", layout)
    batch = batches["sac-topk-ideal"]
    slates, clicks = batch.slates[None], batch.clicks[None]
    with torch.no_grad():
        reference = gru_belief_states(layout.actor_belief, batch.slates, batch.clicks)
        offline = agent.encode_episodes("actor_belief", slates, clicks)[0]
        agent.begin_episodes(slates[:, :, 0], clicks[:, :, 0])
        online = [agent.belief_state()[0]]
        for t in range(1, slates.shape[2]):
            agent.observe(slates[:, :, t], clicks[:, :, t])
            online.append(agent.belief_state()[0])
    assert reference.shape == (4, 101, 20)
    torch.testing.assert_close(offline, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(online, 1), reference, atol=1e-5, rtol=1e-5)


# -- updates --------------------------------------------------------------------------------------------

def optimized_names(layout) -> dict[str, set[str]]:
    """The state-dict names of the parameters each of the layout's optimizers trains."""
    names = {id(p): n for n, p in layout.named_parameters()}
    return {opt_name: {names[id(p)] for group in opt.param_groups for p in group["params"]}
            for opt_name, opt in layout.optimizers().items()}


@pytest.mark.parametrize("name", NAMES)
def test_update_finite_and_changes_trainable_params(name, env, inputs, batches):
    layout = build(name, env, inputs)
    agent = stacked(name, layout)
    before = agent.member_state_dict(0)
    metrics = update_one(agent, batches[name])
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    after = agent.member_state_dict(0)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    for opt_name, names in optimized_names(layout).items():
        assert names & changed, f"{name}: optimizer {opt_name} changed nothing"
    # the belief modules' item tables are trained too
    assert any("belief" in n and "item_embeddings" in n for n in changed)
    for n in before:
        if n.startswith("ranker.") or n == "item_table":
            assert torch.equal(after[n], before[n]), f"frozen {n} changed"


@pytest.mark.parametrize("name", ["sac-topk-ideal", "sac-wknn", "slateq"])
def test_targets_move_by_polyak(name, env, inputs, batches):
    layout = build(name, env, inputs)
    agent = stacked(name, layout)
    pairs = [("q1", "q1_target"), ("q2", "q2_target")] if isinstance(layout, SACAgent) else [("q", "q_target")]
    old = agent.member_state_dict(0)
    targets = [(f"{online}.{p}", f"{target}.{p}") for online, target in pairs
               for p, _ in layout.get_submodule(online).named_parameters()]
    for online, target in targets:
        assert torch.equal(old[online], old[target])
    update_one(agent, batches[name])
    new, tau = agent.member_state_dict(0), layout.params.tau
    for online, target in targets:
        assert torch.allclose(new[target], (1 - tau) * old[target] + tau * new[online], atol=1e-7)
        assert not agent.tensors[target].requires_grad
    assert any(not torch.equal(new[target], old[target]) for _, target in targets)


def test_sac_alpha_schedule(env, inputs, batches):
    agent = stacked("sac-topk-ideal", build("sac-topk-ideal", env, inputs))
    draws = torch.Generator().manual_seed(0)
    assert float(agent.tensors["alpha"][0]) == pytest.approx(0.2)  # configured α for the first update only
    m1 = update_one(agent, batches["sac-topk-ideal"], draws)
    assert m1["alpha"] == pytest.approx(0.2)
    alpha, log_alpha = agent.tensors["alpha"][0], agent.tensors["log_alpha"][0]
    assert float(alpha) == pytest.approx(float(log_alpha.detach().exp()))
    assert abs(float(alpha) - 1.0) < 0.01  # log α starts at 0
    m2 = update_one(agent, batches["sac-topk-ideal"], draws)
    assert m2["alpha"] == pytest.approx(float(agent.tensors["log_alpha"][0].detach().exp()), abs=0.01)
    assert agent.target_entropy == -20.0
    fixed = stacked("sac-topk-ideal", build("sac-topk-ideal", env, inputs, auto_entropy=False))
    update_one(fixed, batches["sac-topk-ideal"])
    assert float(fixed.tensors["alpha"][0]) == pytest.approx(0.2) and "alpha" not in fixed.optimizers


def test_sac_critic_loss_decreases_on_fixed_batch(env, inputs, batches):
    agent = stacked("sac-topk-ideal", build("sac-topk-ideal", env, inputs))
    draws = torch.Generator().manual_seed(0)
    losses = [update_one(agent, batches["sac-topk-ideal"], draws)["critic_loss"] for _ in range(50)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, env, inputs, batches):
    """A member's state dict (what a checkpoint holds) loaded into a fresh layout gives the same agent."""
    agent = stacked(name, build(name, env, inputs, seed=0))
    update_one(agent, batches[name])
    layout = build(name, env, inputs, seed=123)
    layout.load_state_dict(agent.member_state_dict(0))
    clone = stacked(name, layout)
    slates = []
    for a in (agent, clone):
        envs = start(env, a, 3, 9)
        slates.append(a.act("greedy", generators(0), envs)[0])
    assert torch.equal(slates[0], slates[1])


# -- WkNN -----------------------------------------------------------------------------------------------

def test_wknn_layouts_and_candidates(env, inputs):
    for layout in ("slot-major", "dim-major"):
        member = build("sac-wknn", env, inputs, proto_layout=layout)
        assert isinstance(member, WolpertingerSAC)
        agent = stacked("sac-wknn", member)
        assert isinstance(agent, StackedWkNN)
        vectors = torch.randn(1, 4, K, 20)
        assert torch.equal(agent._queries(agent._as_proto(vectors)), vectors)
        # a proto-action made of item embeddings finds those items as nearest candidates
        items = torch.randint(0, N, (1, 4, K))
        proto = agent._as_proto(member.item_table[items])
        cand = agent.candidates(proto)
        assert cand.shape == (1, 4, K, 10) and torch.equal(cand[..., 0], items)
        slate = agent.wolpertinger_slate(proto, torch.randn(1, 4, 20))
        assert bool((slate[..., None] == cand).any(-1).all())  # every slot picks one of its candidates
    # dim-major (quirk iii, the loop's last layout): slot r's query is every K-th number of the proto-action
    proto = torch.arange(K * 20.0).view(1, 1, K * 20)
    assert torch.equal(agent._queries(proto)[0, 0, 3], proto[0, 0, 3::K])
    # quirk (i): the default table is a frozen copy of the critic belief's initial table
    agent = build("sac-wknn", env, inputs)
    assert torch.equal(agent.item_table, agent.critic_belief.item_embeddings.weight.detach())
    assert torch.equal(build("sac-wknn", env, inputs, item_table="mf").item_table, inputs.mf)
    assert torch.equal(build("sac-wknn", env, inputs, item_table="ideal").item_table, env.item_embeddings)
    with pytest.raises(BadInput):
        AGENTS["sac-wknn"].build(dataclasses.replace(AGENTS["sac-wknn"].params_cls(), item_table="mf"), env, AgentInputs())


def test_wknn_critic_action_quirk(env, inputs, batches, monkeypatch):
    """The critic's action input is the recommended slate's embedding; quirk (ii): the shown slate's."""
    batch = batches["sac-wknn"]
    handed = []

    def sac_update(self, stacked_batch, *_):  # StackedSAC.update, which StackedWkNN hands the batch to
        handed.append(stacked_batch.actions)
        return [{}]

    monkeypatch.setattr(StackedSAC, "update", sac_update)
    members = [build("sac-wknn", env, inputs, critic_on_shown_slate=quirk) for quirk in (False, True)]
    for member, slates in zip(members, (batch.rec_slates, batch.slates[:, :100])):
        update_one(stacked("sac-wknn", member), batch)
        assert torch.equal(handed[-1][0], member.item_table[slates].flatten(-2))
    table = members[0].item_table
    assert torch.equal(handed[0][0, 0, 0, 20:40], table[batch.rec_slates[0, 0, 1]])  # slot-major


def test_wknn_random_phase_draws_random_slates(env, inputs):
    member = build("sac-wknn", env, inputs)
    agent = stacked("sac-wknn", member)
    envs = start(env, agent, 8, 2)
    slate, action = agent.act("random", generators(4), envs)
    assert torch.equal(agent._queries(action), member.item_table[slate])
    assert torch.equal(slate[0], torch.randint(0, N, (8, K), generator=torch.Generator().manual_seed(4)))


# -- exact computations -----------------------------------------------------------------------------

def test_sac_critic_target_by_hand(env, inputs, batches):
    """α = 0 and constant target critics: y = r + γ(1 − done)·c, loss = ½(MSE(Q1, y) + MSE(Q2, y)), with
    the critic belief's states and Q1, Q2 evaluated by the layout's own nn.GRU and nn.Sequential."""
    batch = batches["sac-topk-ideal"]
    layout = build("sac-topk-ideal", env, inputs, alpha=0.0, auto_entropy=False)
    c = 5.0
    with torch.no_grad():
        for target in (layout.q1_target, layout.q2_target):
            target[-1].weight.zero_()
            target[-1].bias.fill_(c)
        states = gru_belief_states(layout.critic_belief, batch.slates, batch.clicks)[:, :100]
        x = torch.cat([states, batch.actions], dim=-1)
        done = torch.zeros(4, 100)
        done[:, -1] = 1
        y = batch.rewards + 0.8 * (1 - done) * c
        expected = 0.5 * ((layout.q1(x).squeeze(-1) - y).pow(2).mean() + (layout.q2(x).squeeze(-1) - y).pow(2).mean())
    metrics = update_one(stacked("sac-topk-ideal", layout), batch)
    assert metrics["critic_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_sac_log_prob_matches_tanh_gaussian(env, inputs):
    layout = build("sac-gems", env, inputs)
    agent = stacked("sac-gems", layout)
    states = torch.randn(1, 16, 20)
    action, log_prob = agent.squash(*agent._policy_head(states), torch.randn(1, 16, layout.action_dim))
    mean, log_std = layout.actor(states[0]).chunk(2, dim=-1)  # log std within [−20, 2] here: no clamping
    assert bool((log_std > -20).all() and (log_std < 2).all())
    u = torch.atanh(((action[0] - layout.action_center) / layout.action_scale).clamp(-1 + 1e-6, 1 - 1e-6))
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6).sum(-1)
    assert torch.allclose(log_prob[0], expected, atol=1e-2)


def test_wknn_picks_the_target_q1_best_candidate(env, inputs):
    """Target Q1 set to Q(s, slate) = Σ_slots ⟨w, e_slot⟩ (two ReLU units: relu(z) − relu(−z) = z): each
    slot keeps its candidate with the largest ⟨w, e⟩."""
    layout = build("sac-wknn", env, inputs)
    w = torch.randn(20)
    with torch.no_grad():
        first, last = layout.q1_target[0], layout.q1_target[-1]
        for p in (*first.parameters(), *last.parameters()):
            p.zero_()
        first.weight[0, 20:] = w.repeat(K)  # the critic's input: [state (20), slate embedding slot-major]
        first.weight[1, 20:] = -w.repeat(K)
        last.weight[0, :2] = torch.tensor([1.0, -1.0])
    agent = stacked("sac-wknn", layout)
    proto = torch.randn(1, 6, K * 20)
    cand = agent.candidates(proto)
    expected = cand.gather(3, (layout.item_table[cand] @ w).argmax(-1, keepdim=True)).squeeze(-1)
    assert torch.equal(agent.wolpertinger_slate(proto, torch.randn(1, 6, 20)), expected)


# -- the contract shared by every agent -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_agent_follows_the_step_schedule_contract(name, env, inputs):
    agent = stacked(name, build(name, env, inputs))
    agent.set_step(1234)
    if name == "slateq":  # the schedule lives in a buffer, so it survives a checkpoint
        layout = build(name, env, inputs)
        layout.load_state_dict(agent.member_state_dict(0))
        restored = stacked(name, layout)
        assert restored.epsilon == agent.epsilon == pytest.approx(0.01 + 0.99 * math.exp(-1.234))


def test_click_model_follows_its_inputs_device():
    from slatectl.sim.click_model import click_probabilities, examination_propensities

    propensities = examination_propensities("mixPBM", K, device="meta")
    assert propensities.device.type == "meta"
    probs = click_probabilities(torch.ones(2, K, device="meta"), torch.zeros(2, K, dtype=torch.int64, device="meta"),
                                propensities, 10, 4, 3.0)
    assert probs.device.type == "meta" and probs.shape == (2, K)


def test_stacking_refuses_members_it_cannot_run_together(env, inputs):
    """StackedSAC stacks GeMS or TopK SAC layouts of one kind and shape; StackedWkNN WkNN layouts."""
    topk, gems, wknn = (build(name, env, inputs) for name in ("sac-topk-ideal", "sac-gems", "sac-wknn"))
    with pytest.raises(TypeError, match="StackedSAC stacks SACAgent layouts ranking with GeMSRanker or TopKRanker"):
        StackedSAC([wknn])
    with pytest.raises(TypeError, match="StackedWkNN stacks WolpertingerSAC"):
        StackedWkNN([topk])
    with pytest.raises(ValueError, match="ranker kind"):
        StackedSAC([topk, gems])
    with pytest.raises(ValueError, match="hyper-parameters"):
        StackedSAC([topk, build("sac-topk-ideal", env, inputs, gamma=0.5)])
    narrow = dataclasses.replace(inputs, mf=inputs.mf[:, :8])  # an MF table of 8 dims, not 20
    with pytest.raises(ValueError, match="action and item dimensions"):
        StackedWkNN([build("sac-wknn", env, inputs, item_table="mf"), build("sac-wknn", env, narrow, item_table="mf")])


def test_episode_batch_pairs_first_clicks_and_marks_only_each_episodes_last_step_done():
    # one episode, H = 2 steps, observations o_0 … o_2 of 3-item slates (clicks per slot)
    slates = torch.tensor([[[10, 11, 12], [20, 21, 22], [30, 31, 32]]])
    clicks = torch.tensor([[[0, 1, 1], [0, 0, 0], [1, 0, 1]]])
    batch = EpisodeBatch(slates, clicks, torch.zeros(1, 2, 1), slates[:, 1:], torch.zeros(1, 2), torch.zeros(1, 3, 1))
    items, has_click = batch.first_clicks(shown=False)  # o_{t+1}: o_1 has no click, o_2's first click is 30
    assert items[0, 1].item() == 30 and has_click.tolist() == [[False, True]]
    items, has_click = batch.first_clicks(shown=True)  # quirk: o_t, o_0's first click is 11
    assert items[0, 0].item() == 11 and has_click.tolist() == [[True, False]]
    two_episodes = dataclasses.replace(batch, rewards=torch.zeros(2, 3))  # rows e·H + t with H = 3
    assert two_episodes.not_done().tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
