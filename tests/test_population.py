"""Population training (issue 11): K members in one process, each exactly a solo run of its env and seed."""

import dataclasses
import json
import math
import os
import signal

import pytest
import torch

from sqlmodel import Session
from typer.testing import CliRunner

from slatectl.agents import AGENTS
from slatectl.cli import app
from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.registry.models import Run, utcnow
from slatectl.settings import Settings
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import RunInterrupted, Trainer
from slatectl.train.episodes import member_episodes, play_member_episodes, stack_batches
from slatectl.train.population import group_runs, population_configs
from training_helpers import StopAt

SMALL = [
    "training.random_steps=10", "training.val_every=10", "training.val_episodes=8", "training.test_episodes=8",
    "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50",
    "logged.episodes=200", "gems.max_epochs=1", "gems.max_slates=4000", "mf.max_batches=30", "mf.eval_every_batches=10",
]
SEEDS = [11, 12, 13]
#: REINFORCE is on-policy: its replay holds exactly one batch.
REINFORCE_SMALL = ["agent.capacity=4"]


@pytest.fixture
def settings(tmp_path):
    return Settings.resolve(home=tmp_path / "home")


def _configs(envs, seeds, steps=12, save_every=6, extra=(), agent="sac-gems"):
    base = [resolve_run_config(agent, env, overrides=SMALL + list(extra),
                               cli_training={"max_steps": steps, "save_every": save_every}) for env in envs]
    return population_configs(base, seeds)


def _first_update(registry, configs, explore_steps=0):
    """Build the population, play the random phase (10 episodes), fill the replays, sample and update once
    (at training step 10, as the loop would), then play `explore_steps` exploring episodes.

    Returns (members, stacked agent, episodes, sampled batch, per-member metrics, exploring episodes)."""
    trainer = Trainer(registry, configs)
    members = trainer.build_members()
    agent = trainer.spec.population([m.agent for m in members])
    envs = MemberEnvs([m.env for m in members])
    generators = [m.generator for m in members]
    seeds = [c.training.seed for c in configs]
    agent.set_step(0)
    episodes = play_member_episodes(envs, agent, torch.arange(10), seeds, "random", generators)
    for k, m in enumerate(members):
        m.replay.add(member_episodes(episodes, k))
    batch = stack_batches([m.replay.sample(m.generator) for m in members])
    agent.set_step(10)
    metrics = agent.update(batch, generators)
    explored = (play_member_episodes(envs, agent, torch.arange(10, 10 + explore_steps), seeds, "explore", generators)
                if explore_steps else None)
    return members, agent, episodes, batch, metrics, explored


def _assert_same_weights_after_first_step(stacked, k, alone):
    """Member k's weights after the first update equal those of its run alone (`alone`, a stack of one)
    within 1e-5 (+1e-4 relative), except where Adam's first step amplifies a gradient difference: its step
    lr·g/(|g| + eps) moves by up to lr/eps times the gradient's rounding difference where |g| ≪ eps
    (gradients of ~1e-9 exist in SAC+WkNN's 200-dim actor head), so the tolerance there is lr·|Δg|/eps more."""
    after, expected = stacked.member_state_dict(k), alone.member_state_dict(0)
    assert set(after) == set(expected)
    lr = {id(t): opt.param_groups[0] for opt in alone.optimizers.values() for t in opt.param_groups[0]["params"]}
    for name, value in expected.items():
        tolerance = 1e-5 + 1e-4 * value.abs() if value.is_floating_point() else 0
        tensor = alone.tensors[name]
        if tensor.grad is not None:
            group = lr[id(tensor)]
            tolerance = tolerance + group["lr"] * (stacked.tensors[name].grad[k] - tensor.grad[0]).abs() / group["eps"]
        assert bool(((after[name] - value).abs() <= tolerance).all()), name


# SlateQ with a fast ε schedule (ε ≈ 0.01 at step 10) so that exploring episodes mostly act on the Q-net.
FAST_EPSILON = ["agent.epsilon_decay=1"]
#: What a member's first update must train, per agent family.
TRAINED = {"sac": {"actor.0.weight", "q1.0.weight", "critic_belief.gru.weight_hh_l0", "log_alpha"},
           "picker": {"belief.gru.weight_hh_l0", "belief.item_embeddings.weight"}}


@pytest.mark.parametrize("agent, envs, seeds, k, extra", [
    ("sac-gems", ["focused_topdown"], SEEDS, 1, ()),
    ("sac-gems", ["focused_topdown", "diffuse_divpen"], SEEDS[:2], 2, ()),
    ("sac-topk-ideal", ["focused_topdown", "diffuse_divpen"], SEEDS[:2], 3, ()),
    ("sac-topk-mf", ["diffuse_mix"], SEEDS[:2], 0, ()),
    ("sac-wknn", ["focused_topdown", "diffuse_divpen"], SEEDS[:2], 3, ()),
    ("slateq", ["focused_topdown"], SEEDS, 1, ()),
    ("slateq", ["focused_topdown", "diffuse_divpen"], SEEDS[:2], 3, FAST_EPSILON),
    ("slateq", ["diffuse_divpen", "focused_mix"], SEEDS[:2], 2, FAST_EPSILON + ["agent.act_relevance=reference-slice"]),
    ("reinforce-softmax", ["focused_topdown"], SEEDS, 2, REINFORCE_SMALL),
    ("reinforce-softmax", ["focused_topdown", "diffuse_divpen"], SEEDS[:2], 2, REINFORCE_SMALL),
], ids=["gems-one-env", "gems-mixed-envs", "topk-ideal-mixed-envs", "topk-mf", "wknn-mixed-envs", "slateq-one-env",
        "slateq-mixed-envs", "slateq-mixed-reference-slice", "reinforce-one-env", "reinforce-mixed-envs"])
def test_a_member_is_its_run_alone_weights_episodes_batch_first_update_and_next_episodes(settings, agent, envs, seeds,
                                                                                       k, extra):
    """Member k of a population plays, samples and updates exactly as its run alone (a population of one,
    which is what `slatectl train` without --seeds runs): the member dimension couples nothing."""
    configs = _configs(envs, seeds, agent=agent, extra=extra)
    with open_registry(settings) as registry:
        members, stacked, episodes, batch, metrics, explored = _first_update(registry, configs, explore_steps=3)
        (alone_member,), alone, alone_episodes, alone_batch, (alone_metrics,), alone_explored = _first_update(
            registry, [configs[k]], explore_steps=3)

    # identical initial weights: the member's layout was built as the lone run's
    initial = members[k].agent.state_dict()
    for name, value in alone_member.agent.state_dict().items():
        assert torch.equal(initial[name], value), name

    # identical first episodes (random phase: the member's own generator) and first batch (same replay indices;
    # the stack's kernels compute each member's slice alike whatever the member count, so even GeMS's
    # near-ties in decoding rank alike)
    mine, alone_episodes = member_episodes(episodes, k), member_episodes(alone_episodes, 0)
    torch.testing.assert_close(mine.actions, alone_episodes.actions, atol=1e-6, rtol=0)
    for field in ("slates", "clicks", "rewards", "user_states"):
        assert torch.equal(getattr(mine, field), getattr(alone_episodes, field)), field
    for field in ("slates", "clicks", "rewards"):
        assert torch.equal(getattr(member_episodes(batch, k), field), getattr(member_episodes(alone_batch, 0), field))

    # first update: losses, gradients and new weights within 1e-5 (and, for a loss in the hundreds such as
    # SAC+WkNN's critic loss ≈ 422, within 1e-5 relative: one float32 ulp there is already 3e-5; REINFORCE's
    # loss is a sum of ~10² terms)
    assert set(metrics[k]) == set(alone_metrics)
    for key, value in alone_metrics.items():
        assert metrics[k][key] == pytest.approx(value, abs=1e-5, rel=1e-5), key
    assert metrics[k] != metrics[(k + 1) % len(configs)]  # the members are different runs
    trained = {n for n, t in alone.tensors.items() if t.grad is not None}
    assert TRAINED["sac" if agent.startswith("sac") else "picker"] <= trained
    for name in trained:
        torch.testing.assert_close(stacked.tensors[name].grad[k], alone.tensors[name].grad[0], atol=1e-5, rtol=1e-4,
                                   msg=name)
    _assert_same_weights_after_first_step(stacked, k, alone)

    # the next (exploring) episodes: the member's draws, actions and slates are its run's alone
    assert torch.equal(member_episodes(explored, k).slates, member_episodes(alone_explored, 0).slates)
    # (acting with weights one update old: float rounding as after the update, amplified by Adam's first step)
    torch.testing.assert_close(member_episodes(explored, k).actions, member_episodes(alone_explored, 0).actions,
                               atol=1e-4, rtol=1e-3)


def _assert_close_but_relu_kinks(actual, expected, name, updates=2):
    """Equal within 1e-4 up to float rounding, except a few elements (≤ 0.1 %): a ReLU input within
    rounding of 0 for some transition switches that transition's gradient through the unit on or off in
    one kernel and not in the other, and a gradient that is nearly zero (an item embedding row hardly seen)
    is mostly rounding; Adam's normalised step turns either into a weight difference of the order of the
    learning rate. Bound: in its first steps Adam moves a weight by at most about lr per step
    (|m̂/√v̂| ≲ 1), so `updates` updates at the largest lr (3e-3: pi_lr of SAC and REINFORCE) on either side
    differ by at most about 2 · updates · 3e-3 (≈ 1e-2 for two updates)."""
    diff = (actual.double() - expected.double()).abs()
    beyond = diff > 1e-4 + 1e-3 * expected.double().abs()
    assert int(beyond.sum()) <= max(1, expected.numel() // 1000), (name, int(beyond.sum()), float(diff.max()))
    assert diff.numel() == 0 or float(diff.max()) < 2 * updates * 3e-3, (name, float(diff.max()))


def test_a_slateq_member_without_a_click_skips_its_update_and_the_other_continues_as_its_run_alone(settings):
    """A member whose batch has no click makes no step: it keeps its weights, Adam moments and target net,
    while the other member's update is still the one its run alone makes."""
    configs = _configs(["focused_topdown"], SEEDS[:2], agent="slateq")
    with open_registry(settings) as registry:
        members, stacked, _, batch, _, _ = _first_update(registry, configs)  # one update: Adam has moments
        (alone_member,), alone, _, _, _, _ = _first_update(registry, configs[:1])
    before = {k: stacked.member_state_dict(k) for k in (0, 1)}
    moments = stacked.member_optimizer_states(1)["q"]["state"]
    clicks = batch.clicks.clone()
    clicks[1] = 0.0  # member 1's batch has no click at all
    no_clicks = dataclasses.replace(batch, clicks=clicks)
    stacked.set_step(11)
    alone.set_step(11)
    metrics = stacked.update(no_clicks, [m.generator for m in members])
    alone_metrics = alone.update(stack_batches([member_episodes(no_clicks, 0)]), [alone_member.generator])
    assert metrics[1]["kept_transitions"] == 0 and metrics[1]["q_loss"] == 0.0
    assert alone_metrics[0]["kept_transitions"] > 0
    assert metrics[0]["q_loss"] == pytest.approx(alone_metrics[0]["q_loss"], abs=1e-5)
    after = stacked.member_state_dict(1)
    for name, value in before[1].items():
        if name != "step":
            assert torch.equal(after[name], value), name
    assert int(after["step"]) == 12 and int(after["update_count"]) == int(before[1]["update_count"])
    for i, entry in stacked.member_optimizer_states(1)["q"]["state"].items():
        assert torch.equal(entry["exp_avg"], moments[i]["exp_avg"])
        assert torch.equal(entry["exp_avg_sq"], moments[i]["exp_avg_sq"])
    assert not torch.equal(stacked.member_state_dict(0)["q.0.weight"], before[0]["q.0.weight"])
    for name, value in alone.member_state_dict(0).items():
        torch.testing.assert_close(stacked.member_state_dict(0)[name], value, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("agent, extra", [("sac-gems", ()), ("sac-wknn", ()), ("slateq", FAST_EPSILON),
                                          ("reinforce-softmax", REINFORCE_SMALL)])
def test_members_are_independent_of_each_others_seed(settings, agent, extra):
    with open_registry(settings) as registry:
        _, agent_a, episodes_a, _, metrics_a, explored_a = _first_update(
            registry, _configs(["focused_topdown"], SEEDS, agent=agent, extra=extra), explore_steps=2)
        _, agent_b, episodes_b, _, metrics_b, explored_b = _first_update(
            registry, _configs(["focused_topdown"], [11, 12, 99], agent=agent, extra=extra), explore_steps=2)
    assert metrics_a[:2] == metrics_b[:2]
    assert metrics_a[2] != metrics_b[2]
    assert torch.equal(episodes_a.slates[:2], episodes_b.slates[:2])
    assert not torch.equal(episodes_a.slates[2], episodes_b.slates[2])
    assert torch.equal(explored_a.slates[:2], explored_b.slates[:2])
    for name, tensor in agent_a.tensors.items():
        assert torch.equal(tensor[:2], agent_b.tensors[name][:2]), name
        if tensor.grad is not None:
            assert torch.equal(tensor.grad[:2], agent_b.tensors[name].grad[:2]), name


@pytest.mark.parametrize("agent, parallel", [("sac-gems", 1), ("sac-gems", 2), ("sac-topk-ideal", 1)])
def test_population_registers_member_runs_matching_solo_runs(settings, agent, parallel):
    configs = _configs(["focused_topdown"], SEEDS[:2], extra=[f"training.parallel_episodes={parallel}"], agent=agent)
    with open_registry(settings) as registry:
        results = Trainer(registry, configs, logs_dir=settings.home / "logs").run(command="test")
        solo = Trainer(registry, configs[1]).run(command="test")[0]
        runs = [registry.get_run(r.run_id) for r in results]
        member_ckpts = registry.list_checkpoints(run_id=results[1].run_id)
        solo_ckpts = registry.list_checkpoints(run_id=solo.run_id)
        member_state = registry.load_checkpoint_state(member_ckpts[-1].id)
        solo_state = registry.load_checkpoint_state(solo_ckpts[-1].id)
        validations = registry.validations(results[0].run_id)
    assert [r.status for r in runs] == ["finished", "finished"]
    assert [r.seed for r in runs] == SEEDS[:2]
    groups = {r.group_id for r in runs}
    assert len(groups) == 1 and [r.config["population"]["member"] for r in runs] == [0, 1]
    assert {r.config["population"]["group"] for r in runs} == groups
    for result in results:
        assert [c.step for c in result.checkpoints] == [6, 12]
        assert [c.trained for c in result.checkpoints] == [False, True]  # step 6 is in the random phase
        assert all(c.test_episodes == 8 for c in result.checkpoints)
    assert [v.step for v in validations] == [6, 10, 12]
    # step 6 is in the random phase: same weights and users, so the very same validation return
    assert member_ckpts[0].val_return_mean == solo_ckpts[0].val_return_mean
    for name, value in solo_state.items():  # two updates later: equal up to float rounding
        _assert_close_but_relu_kinks(member_state[name], value, name)
    assert (settings.home / "logs" / f"run-{results[0].run_id}.csv").read_text().count("\n") >= 3


@pytest.mark.parametrize("agent, extra", [("slateq", FAST_EPSILON), ("reinforce-softmax", REINFORCE_SMALL),
                                          ("sac-wknn", ())])
def test_stacked_population_checkpoints_at_the_requested_steps_match_solo_runs(settings, agent, extra):
    configs = _configs(["focused_topdown", "diffuse_divpen"], SEEDS[:2], agent=agent, extra=extra)
    with open_registry(settings) as registry:
        results = Trainer(registry, configs, logs_dir=settings.home / "logs").run(command="test")
        solo = Trainer(registry, configs[3]).run(command="test")[0]
        runs = [registry.get_run(r.run_id) for r in results]
        member_ckpts = [registry.list_checkpoints(run_id=r.run_id) for r in results]
        solo_ckpts = registry.list_checkpoints(run_id=solo.run_id)
        member_states = [registry.load_checkpoint_state(c.id) for c in member_ckpts[3]]
        solo_states = [registry.load_checkpoint_state(c.id) for c in solo_ckpts]
        member_vals = {v.step: v.return_mean for v in registry.validations(results[3].run_id)}
        solo_vals = {v.step: v.return_mean for v in registry.validations(solo.run_id)}
    assert [(r.env, r.seed, r.status) for r in runs] == [(c.env, c.training.seed, "finished") for c in configs]
    assert len({r.group_id for r in runs}) == 1
    for ckpts in member_ckpts:
        assert [c.step for c in ckpts] == [6, 12]
        assert [c.trained for c in ckpts] == [c.trained for c in solo_ckpts]  # the solo rule of the `trained` flag
        assert all(c.test_episodes == 8 for c in ckpts)
    assert sorted(member_vals) == sorted(solo_vals) == [6, 10, 12]
    for member_state, solo_state in zip(member_states, solo_states):  # ordinary solo checkpoints, same weights
        assert set(member_state) == set(solo_state)
        for name, value in solo_state.items():
            # up to 12 updates (REINFORCE updates at every step): rounding, as the two-update check below
            _assert_close_but_relu_kinks(member_state[name], value, name, updates=12)
    if agent != "reinforce-softmax":  # no update in the random phase: the very same validation return at step 6
        assert member_vals[6] == solo_vals[6]


class _SignalAt:
    """A reporter that sends this process `signum` once the population reaches `step` (a scheduler's kill)."""

    def __init__(self, step, signum=signal.SIGTERM):
        self.step, self.signum, self.sent = step, signum, False

    def message(self, text):
        pass

    def start(self, total_steps, first_step, random_steps):
        pass

    def advance(self, progress):
        if progress.step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def stop(self):
        pass


@pytest.mark.parametrize("agent, extra", [("sac-gems", ()), ("slateq", ()), ("reinforce-softmax", REINFORCE_SMALL)])
def test_resume_group_continues_every_member_as_an_uninterrupted_population(settings, agent, extra):
    configs = _configs(["focused_topdown"], SEEDS[:2], steps=16, save_every=12, agent=agent, extra=extra)
    with open_registry(settings) as registry:
        with pytest.raises(RunInterrupted, match="--resume g-interrupted"):
            Trainer(registry, configs, _SignalAt(14)).run(command="test", group="g-interrupted")
        members = group_runs(registry, "g-interrupted")
        assert [r.status for r in members] == ["interrupted", "interrupted"]
        assert all(r.group_id == "g-interrupted" for r in members)
        assert [[c.step for c in registry.list_checkpoints(run_id=r.id)] for r in members] == [[12], [12]]
        resumed = Trainer.resume(registry, "g-interrupted")
        straight = Trainer(registry, configs).run(command="test")
        assert [r.status for r in group_runs(registry, "g-interrupted")] == ["finished", "finished"]
        for a, b in zip(resumed, straight):
            assert [c.step for c in registry.list_checkpoints(run_id=a.run_id)] == [12, 16]
            assert len(registry.resume_states(a.run_id)) == 1  # pruned to keep_resume (default 1)
            state_a = registry.load_checkpoint_state(registry.list_checkpoints(run_id=a.run_id)[-1].id)
            state_b = registry.load_checkpoint_state(registry.list_checkpoints(run_id=b.run_id)[-1].id)
            for name in state_a:
                torch.testing.assert_close(state_a[name], state_b[name], atol=1e-6, rtol=1e-5, msg=name)
        with pytest.raises(BadInput):
            Trainer.resume(registry, "no-such-group")


def test_a_kill_between_members_checkpoints_is_completed_by_resume(settings, monkeypatch):
    configs = _configs(["focused_topdown"], SEEDS[:2], steps=12, save_every=6)
    with open_registry(settings) as registry:
        register = registry.register_checkpoint

        def dies_at_second_members_last_checkpoint(run_id, step, *args, **kwargs):
            if step == 12 and registry.get_run(run_id).config["population"]["member"] == 1:
                raise OSError("disk gone")
            return register(run_id, step, *args, **kwargs)

        monkeypatch.setattr(registry, "register_checkpoint", dies_at_second_members_last_checkpoint)
        with pytest.raises(OSError):
            Trainer(registry, configs).run(command="test", group="g-half-saved")
        monkeypatch.setattr(registry, "register_checkpoint", register)
        members = group_runs(registry, "g-half-saved")
        assert [r.status for r in members] == ["failed", "failed"]
        assert [[c.step for c in registry.list_checkpoints(run_id=r.id)] for r in members] == [[6, 12], [6]]
        results = Trainer.resume(registry, "g-half-saved")
        assert [[c.step for c in r.checkpoints] for r in results] == [[6, 12], [6, 12]]
        assert [r.status for r in group_runs(registry, "g-half-saved")] == ["finished", "finished"]
        assert all(c.test_episodes == 8 for r in results for c in r.checkpoints)


def test_a_second_ctrl_c_marks_every_member_interrupted(settings):
    configs = _configs(["focused_topdown"], SEEDS[:2], steps=12, save_every=6)
    with open_registry(settings) as registry:
        with pytest.raises(KeyboardInterrupt):  # what a second Ctrl-C raises, wherever the loop is
            Trainer(registry, configs, StopAt(4)).run(command="test", group="g-ctrl-c")
        assert [r.status for r in group_runs(registry, "g-ctrl-c")] == ["interrupted", "interrupted"]


def test_resume_refuses_a_group_with_a_live_member_and_leaves_the_others_as_they_were(settings):
    configs = _configs(["focused_topdown"], SEEDS[:2])
    with open_registry(settings) as registry:
        runs = [registry.start_run(c.agent_name, c.env, c.training.seed,
                                   {**c.to_dict(), "population": {"group": "g-live", "member": k, "size": 2}},
                                   group_id="g-live")
                for k, c in enumerate(configs)]
        registry.finish_run(runs[0].id, status="interrupted")
        with Session(registry.engine) as session:  # member 1 is alive in another process
            row = session.get(Run, runs[1].id)
            row.pid, row.host, row.heartbeat_at = 4321, "elsewhere", utcnow()
            session.add(row)
            session.commit()
        with pytest.raises(BadInput, match="being worked on"):
            Trainer.resume(registry, "g-live")
        assert [r.status for r in group_runs(registry, "g-live")] == ["interrupted", "running"]
        assert registry.get_run(runs[1].id).host == "elsewhere"


def test_population_rejects_members_that_cannot_run_in_lockstep(settings):
    a = _configs(["focused_topdown"], [1])[0]
    b = _configs(["focused_topdown"], [2], extra=["agent.gamma=0.5"])[0]
    with open_registry(settings) as registry:
        with pytest.raises(BadInput, match="share every"):
            Trainer(registry, [a, b])
        with pytest.raises(BadInput, match="same env and seed"):
            Trainer(registry, [a, a])


def test_cli_mixed_env_population_matches_solo_runs_and_resumes_by_group(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")
    small = [a for item in SMALL for a in ("--set", item)]
    args = ["--home", home, "train", "sac-gems", "--steps", "12", "--save-every", "6", "--seed", "11", *small]
    result = runner.invoke(app, [*args, "--env", "focused_topdown,diffuse_divpen", "--seeds", "1"])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(app, ["--home", home, "ckpt", "list", "--json"]).stdout)
    assert sorted((c["env"], c["step"]) for c in listed) == [("diffuse_divpen", 6), ("diffuse_divpen", 12),
                                                             ("focused_topdown", 6), ("focused_topdown", 12)]
    for env in ("focused_topdown", "diffuse_divpen"):  # the same runs trained solo
        solo = runner.invoke(app, [*args, "--env", env])
        assert solo.exit_code == 0, solo.output
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        runs = registry.list_runs()
        group = next(r.group_id for r in runs if r.group_id)
        for env in ("focused_topdown", "diffuse_divpen"):
            member = next(r for r in runs if r.env == env and "population" in r.config)
            solo = next(r for r in runs if r.env == env and "population" not in r.config)
            pop_v = {v.step: v for v in registry.validations(member.id)}
            solo_v = {v.step: v for v in registry.validations(solo.id)}
            assert pop_v[6].return_mean == solo_v[6].return_mean  # random phase: identical
            for step in (10, 12):  # after updates: equal within the validation noise (SEM-derived tolerance)
                a, b = pop_v[step], solo_v[step]
                sem = math.sqrt((a.return_std ** 2 + b.return_std ** 2) / a.episodes)
                assert abs(a.return_mean - b.return_mean) <= 3 * sem + 1e-9
    in_group = json.loads(runner.invoke(app, ["--home", home, "ckpt", "list", "--group", group, "--json"]).stdout)
    assert sorted(c["step"] for c in in_group) == [6, 6, 12, 12]  # the members' only, not the solo runs'
    assert runner.invoke(app, ["--home", home, "ckpt", "list", "--group", "pop-nothere"]).exit_code == 2
    jobs = runner.invoke(app, [*args, "--env", "focused_topdown,diffuse_divpen", "--jobs", "2"])
    assert jobs.exit_code == 2 and "--jobs does not apply" in jobs.output
    again = runner.invoke(app, ["--home", home, "train", "sac-gems", "--resume", group])
    assert again.exit_code == 0, again.output  # finished already: nothing left to train, tests re-recorded
    unknown = runner.invoke(app, ["--home", home, "train", "sac-gems", "--resume", "pop-nothere"])
    assert unknown.exit_code == 2 and "no population" in unknown.output
    bad = runner.invoke(app, [*args, "--env", "focused_topdown,focused_topdown", "--seeds", "1"])
    assert bad.exit_code == 2 and "distinct" in bad.output


def test_cli_slateq_population_is_stacked_and_lists_every_members_checkpoints(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")
    small = [a for item in SMALL for a in ("--set", item)]
    result = runner.invoke(app, ["--home", home, "train", "slateq", "--env", "focused_topdown,diffuse_divpen",
                                 "--seeds", "2", "--seed", "5", "--steps", "12", "--save-every", "6", *small])
    assert result.exit_code == 0, result.output
    assert "stacked population of 4 runs" in result.output and "one after another" not in result.output
    assert "12 steps each on cpu" in result.output  # the device it trains on (auto resolves to cpu here)
    listed = json.loads(runner.invoke(app, ["--home", home, "ckpt", "list", "--json"]).stdout)
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        runs = {r.id: r for r in registry.list_runs()}
    assert sorted((r.env, r.seed) for r in runs.values()) == sorted(
        (env, seed) for env in ("focused_topdown", "diffuse_divpen") for seed in (5, 6))
    assert len({r.group_id for r in runs.values()}) == 1
    steps = {run_id: sorted(c["step"] for c in listed if c["run_id"] == run_id) for run_id in runs}
    assert steps == {run_id: [6, 12] for run_id in runs}
    assert all(c["env"] == runs[c["run_id"]].env and c["val_return"] is not None for c in listed)


def test_an_agent_without_a_stacked_form_is_refused_before_any_work(settings, monkeypatch):
    """Every trainable agent stacks (one engine, no sequential fallback); one registered without is refused."""
    monkeypatch.setitem(AGENTS, "slateq", dataclasses.replace(AGENTS["slateq"], population=None))
    configs = _configs(["focused_topdown"], [5], steps=12, save_every=12, agent="slateq")
    with open_registry(settings) as registry:
        with pytest.raises(BadInput, match="no stacked form"):
            Trainer(registry, configs)
        assert registry.list_runs() == []


def test_mixed_simulator_gives_each_user_its_own_environments_trajectory():
    from slatectl.sim.factory import make_env

    names = ["focused_topdown", "diffuse_divpen", "focused_mix", "diffuse_topdown"]
    seeds = [3, 4, 5, 3]
    envs = MemberEnvs([make_env(n) for n in names])
    users = torch.arange(7, 13)
    first = envs.reset(users, seeds)
    solo = [make_env(n) for n in names]
    solo_first = [e.reset(users, s) for e, s in zip(solo, seeds)]
    generator = torch.Generator().manual_seed(0)
    for k in range(len(names)):
        assert torch.equal(first.slate[k], solo_first[k].slate) and torch.equal(first.clicks[k], solo_first[k].clicks)
    for t in range(100):
        slates = torch.randint(0, 1000, (len(names), len(users), 10), generator=generator)
        slates[:, :, 0] = torch.where(torch.rand(len(names), len(users), generator=generator) < 0.3, -1, slates[:, :, 0])
        step = envs.step(slates)
        for k, env in enumerate(solo):
            expected = env.step(slates[k])
            assert torch.equal(step.observation.slate[k], expected.observation.slate), (k, t)
            assert torch.equal(step.observation.clicks[k], expected.observation.clicks), (k, t)
            assert torch.equal(step.reward[k], expected.reward)
            torch.testing.assert_close(step.user_state[k], expected.user_state, atol=0, rtol=0)
    assert envs.env.relevances().shape == (len(names) * len(users), 1000)
