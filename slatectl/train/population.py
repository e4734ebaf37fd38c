"""Population training: K runs of one agent (envs × seeds) trained in one process, in lockstep.

Each member is an ordinary run in the registry (its own seed, env, config, lease, validations,
checkpoints at exactly the requested steps, resume states) with the population's `group_id`; its config
also carries `population = {group, member, size}` (its place in the group). At every step every member
plays its own training episode(s) (its own users: its env, its seed) and makes its own update on a batch
of its own replay, on the schedule of a solo run (`StepSchedule`); the members' weights are stacked so
one batched kernel serves all of them (the agent's `AgentSpec.population`, a `StackedAgent`:
docs/population.md). The loop knows stacked agents only through `StackedAgent`'s methods. Member k reproduces the solo
run with the same env and seed: same initial weights (built after the same `seed_everything`), same
episodes, same replay indices and noise (its own generator continues the solo run's global RNG stream),
same update — up to float rounding of batched vs unbatched kernels.

Saving at a save step goes phase by phase over the members (every resume state, then every checkpoint,
then pruning), so a kill part-way leaves a step whose resume state every member still has: `--resume
GROUP` continues all members from the newest step common to them.

An agent is stacked when its spec names a population implementation (`population_supported(agent)`);
the others' members train one after another as solo runs (`train_members_sequentially`), still one group.
"""

from __future__ import annotations

import shlex
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from slatectl.agents import AGENTS
from slatectl.agents.base import ActMode, Agent, EpisodeBatch
from slatectl.agents.spec import stacked_agents
from slatectl.agents.stacked import StackedAgent
from slatectl.errors import BadInput
from slatectl.harness import seed_everything, training_harness
from slatectl.registry import Registry, Run
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec
from slatectl.train.assembly import (ResolvedInputs, build_agent, ensure_agent_inputs, ensure_population_gems,
                                     registered_agent_inputs)
from slatectl.train.checkpoints import (ResumeState, load_resume_state, register_checkpoint, register_resume_state,
                                        resume_states_by_step)
from slatectl.train.config import RunConfig, run_config_from_dict
from slatectl.train.evaluation import Evaluation, TestResult, test_checkpoints
from slatectl.train.lifecycle import Heartbeat, StopRequests
from slatectl.train.loop import (RunInterrupted, StartedRun, Trainer, TrainResult, finish_after_error, on_device,
                                 recorded_config, trained_from_start)
from slatectl.train.metrics_log import MetricsLog
from slatectl.train.progress import SilentReporter, TrainingProgress, TrainingReporter
from slatectl.train.replay import EpisodeReplay
from slatectl.train.schedule import StepSchedule

def population_supported(agent_name: str) -> bool:
    """Whether the agent's members are stacked into one model (else they train one after another)."""
    return AGENTS[agent_name].population is not None


def population_configs(base: list[RunConfig], seeds: list[int]) -> list[RunConfig]:
    """Members env-major: for each env config in `base`, one member per seed (training.seed = seed)."""
    configs = [replace(cfg, training=replace(cfg.training, seed=seed)) for cfg in base for seed in seeds]
    for cfg in configs:
        cfg.training.validate()
    return configs


def check_population(configs: list[RunConfig]) -> None:
    """BadInput unless the members can run in lockstep: one agent, one loop schedule, distinct (env, seed)."""
    if not configs:
        raise BadInput("a population needs at least one member.")
    first = configs[0]
    shared = {**asdict(first.training), "seed": None}
    for cfg in configs:
        if cfg.agent_name != first.agent_name:
            raise BadInput("all members of a population train the same agent.")
        if {**asdict(cfg.training), "seed": None} != shared or cfg.agent != first.agent:
            raise BadInput("members of a population share every training and agent setting except the seed.")
    if first.training.precision != "32":  # the stacked agents' hand-written GRU/critic kernels are float32
        raise BadInput("a population trains at --precision 32 only; bf16-mixed is for solo runs.")
    pairs = [(c.env, c.training.seed) for c in configs]
    if len(set(pairs)) != len(pairs):
        raise BadInput("two members of the population have the same env and seed; give distinct seeds.")


def new_group_id() -> str:
    return f"pop-{uuid.uuid4().hex[:12]}"


def membership(group: str, member: int, size: int) -> dict:
    """What a member run's config records about its place in the group."""
    return {"group": group, "member": member, "size": size}


def group_runs(registry: Registry, group: str) -> list[Run]:
    """The member runs of a group, in member order; BadInput when the group is unknown or incomplete."""
    if not group.strip():  # an empty filter would match every run in the registry
        raise BadInput("a population group id is needed (got an empty one); `slatectl inspect run RUN_ID` shows "
                       "a member's group id.")
    runs = sorted(registry.list_runs(group_id=group), key=lambda r: r.config["population"]["member"])
    if not runs:
        raise BadInput(f"no population {group!r} in the registry (a member's group id is shown by "
                       f"`slatectl inspect run RUN_ID`; `slatectl ckpt list --group GROUP` lists its checkpoints).")
    size = runs[0].config["population"]["size"]
    if len(runs) != size:
        raise BadInput(f"population {group} should have {size} runs; the registry has {len(runs)}.")
    return runs


def claim_members(registry: Registry, runs: list[Run]) -> None:
    """Take every member's lease, or none: when one member's lease is still live (BadInput naming its
    holder), the members claimed before it get their previous status back."""
    claimed: list[Run] = []
    try:
        for run in runs:
            registry.claim_run(run.id)
            claimed.append(run)
    except BadInput:
        for run in claimed:  # a `running` member here had a stale lease: its process is gone
            registry.finish_run(run.id, status="interrupted" if run.status == "running" else run.status,
                                error=run.error)
        raise


def train_members_sequentially(registry: Registry, configs: list[RunConfig], reporter: TrainingReporter | None = None,
                               logs_dir: Path | None = None, command: str | None = None,
                               group: str | None = None) -> list[TrainResult]:
    """The fallback for agents that are not stacked: the members as solo runs one after another, each
    exactly as `Trainer.run`, all recorded up front with the group id so `--resume GROUP` finds every
    member even if the process stops during the first one (members not started yet are then marked
    `interrupted` too)."""
    check_population(configs)
    group = group or new_group_id()
    trainers = [Trainer(registry, cfg, reporter, logs_dir) for cfg in configs]
    started: list[StartedRun] = []
    results: list[TrainResult] = []
    in_training: int | None = None
    try:
        for k, trainer in enumerate(trainers):
            started.append(trainer.start(command, group, membership(group, k, len(configs))))
        for in_training, (trainer, run) in enumerate(zip(trainers, started)):
            results.append(trainer.train_started(run))
    except BaseException as exc:
        # The member in training recorded its own end; the ones that had not started end with it.
        for k, run in enumerate(started):
            if in_training is None or k > in_training:
                registry.finish_run(run.run_id, status="interrupted")
        if isinstance(exc, RunInterrupted):
            raise RunInterrupted(f"{exc} The members after it are marked interrupted too; continue the whole "
                                 f"population with `slatectl train {configs[0].agent_name} --resume {group}`.",
                                 exc.signal_name) from exc
        raise
    return results


@dataclass
class Member:
    config: RunConfig
    env: TopicRec
    agent: Agent  # layout of the member's weights (the trained values live in the stacked agent)
    inputs: ResolvedInputs
    generator: torch.Generator  # continues the solo run's global RNG stream after agent construction
    replay: EpisodeReplay
    run_id: int = -1
    recorded_validations: set[int] = field(default_factory=set)
    recorded_checkpoints: set[int] = field(default_factory=set)


@torch.no_grad()
def play_member_episodes(envs: MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor, seeds: list[int],
                         mode: ActMode, generators: list[torch.Generator]) -> EpisodeBatch:
    """`play_episodes` for a population: member k plays users `user_ids` of its env with seed `seeds[k]`.

    Returns an `EpisodeBatch` whose fields have a leading member dimension (K, B, …), on the simulator's
    device (`envs.device`). Observations go to the agent's device, slates to the simulator's; with both
    on one device nothing is copied and no env step waits for the host (as `play_episodes`).
    """
    cfg = envs.config
    K, B, H, S = envs.members, user_ids.shape[0], cfg.episode_length, cfg.slate_size
    on = {"device": envs.device}  # the episode buffers live with the simulator
    slates = torch.empty(K, B, H + 1, S, dtype=torch.int64, **on)
    clicks = torch.empty(K, B, H + 1, S, dtype=torch.float32, **on)
    actions = torch.zeros(K, B, H, agent.action_dim, dtype=torch.float32, **on)
    rewards = torch.empty(K, B, H, dtype=torch.float32, **on)
    user_states = torch.empty(K, B, H + 1, cfg.embedding_dim, dtype=torch.float32, **on)
    device = agent.device
    first = envs.reset(user_ids, seeds)
    slates[:, :, 0], clicks[:, :, 0], user_states[:, :, 0] = first.slate, first.clicks, envs.user_states()
    agent.begin_episodes(first.slate.to(device), first.clicks.to(device))
    for t in range(H):
        slate, action = agent.act(mode, generators, envs)
        # Agents never put oracle positions in a slate; saying so spares the simulator a per-step check.
        result = envs.step(slate.to(envs.device), oracle=False)
        obs = result.observation
        agent.observe(obs.slate.to(device), obs.clicks.to(device))
        slates[:, :, t + 1], clicks[:, :, t + 1] = obs.slate, obs.clicks
        if agent.action_dim:
            actions[:, :, t] = action
        rewards[:, :, t] = result.reward
        user_states[:, :, t + 1] = result.user_state
    return EpisodeBatch(slates, clicks, actions, slates[:, :, 1:], rewards, user_states)


def member_episodes(batch: EpisodeBatch, k: int, rows: slice | None = None) -> EpisodeBatch:
    """Member k's episodes (rows `rows`, default all) of a population batch, as a solo batch."""
    rows = rows if rows is not None else slice(None)
    return EpisodeBatch(*(getattr(batch, f)[k, rows] for f in batch.__dataclass_fields__))


def stack_batches(batches: list[EpisodeBatch]) -> EpisodeBatch:
    return EpisodeBatch(*(torch.stack([getattr(b, f) for b in batches]) for f in EpisodeBatch.__dataclass_fields__))


class PopulationTrainer:
    """Trains (or resumes) the K members of a population in lockstep; records K runs in the registry."""

    def __init__(self, registry: Registry, configs: list[RunConfig], reporter: TrainingReporter | None = None,
                 logs_dir: Path | None = None):
        check_population(configs)
        if not population_supported(configs[0].agent_name):
            raise BadInput(f"agent {configs[0].agent_name!r} cannot train as a stacked population yet "
                           f"(stacked: {', '.join(stacked_agents())}); train its members one after another.")
        self.registry = registry
        self.reporter = reporter or SilentReporter()
        self.logs_dir = logs_dir
        # As a solo run (`Trainer`): `auto` takes CUDA when torch sees a GPU; the members' configs record
        # the resolved device, and GeMS inputs a member pretrains for itself are pretrained there.
        self.harness = training_harness(configs[0].training.device, configs[0].training.precision,
                                        say=self.reporter.message)
        self.device = self.harness.device
        self.configs = [on_device(cfg, self.device) for cfg in configs]
        self.training = self.configs[0].training
        self.group = ""

    # ------------------------------------------------------------------ entry points
    def build_members(self, runs: list[Run] | None = None) -> list[Member]:
        """Each member built exactly as a solo run builds its agent: seed_everything(seed), then the agent
        (pretrained inputs are found or built with forked RNG state, so they do not shift the stream; the
        missing GeMS of several members are first pretrained as one stack); a resumed member from exactly
        the inputs its run recorded."""
        members: list[Member] = []
        if runs is None:  # missing GeMS of several members: pretrained as one stack, not one after another
            ensure_population_gems(self.registry, self.configs, self.reporter.message)
        for k, cfg in enumerate(self.configs):
            seed_everything(cfg.training.seed)
            resolved = (ensure_agent_inputs(self.registry, cfg, self.reporter.message) if runs is None
                        else registered_agent_inputs(self.registry, runs[k].inputs))
            env, agent = build_agent(cfg, resolved.inputs)
            generator = torch.Generator()
            generator.set_state(torch.get_rng_state())
            members.append(Member(cfg, env, agent, resolved, generator,
                                  EpisodeReplay(cfg.agent.capacity, cfg.agent.batch_size, self.device)))
        return members

    def stack(self, members: list[Member]) -> StackedAgent:
        """The members' agents in the stacked form their spec names (`AgentSpec.population`)."""
        return AGENTS[self.configs[0].agent_name].population([m.agent for m in members])

    def run(self, command: str | None = None, group: str | None = None) -> list[TrainResult]:
        members = self.build_members()
        self.group = group or new_group_id()
        for k, m in enumerate(members):
            config = {**recorded_config(m.config, self.device), "population": membership(self.group, k, len(members))}
            run = self.registry.start_run(m.config.agent_name, m.config.env, m.config.training.seed, config,
                                          command=command or shlex.join(sys.argv), inputs=m.inputs.artifact_ids,
                                          group_id=self.group)
            m.run_id = run.id
        self.reporter.message(f"population {self.group}: {len(members)} runs of {self.configs[0].agent_name} "
                              f"(runs {members[0].run_id}–{members[-1].run_id}), {self.training.max_steps:,} steps each "
                              f"on {self.device.type}")
        return self._train(members, self.stack(members), first_step=0)

    @classmethod
    def resume(cls, registry: Registry, group: str, reporter: TrainingReporter | None = None,
               logs_dir: Path | None = None) -> list[TrainResult]:
        """Resume every member of `group` (stacked agents in lockstep; others one after another)."""
        runs = group_runs(registry, group)
        if not population_supported(runs[0].agent):
            return [Trainer.resume(registry, r.id, reporter, logs_dir) if r.status != "finished"
                    else TrainResult(run_id=r.id, checkpoints=registry.list_checkpoints(run_id=r.id)) for r in runs]
        trainer = cls(registry, [run_config_from_dict(r.config) for r in runs], reporter, logs_dir)
        trainer.group = group
        claim_members(registry, runs)
        return trainer._resume(runs)

    def _resume(self, runs: list[Run]) -> list[TrainResult]:
        try:
            members = self.build_members(runs)
            for m, run in zip(members, runs):
                m.run_id = run.id
                m.recorded_validations = {v.step for v in self.registry.validations(run.id)}
                m.recorded_checkpoints = {c.step for c in self.registry.list_checkpoints(run_id=run.id)}
            agent = self.stack(members)
            states = [resume_states_by_step(self.registry, m.run_id, m.config.env) for m in members]
            common = set.intersection(*(set(s) for s in states))
            step = max(common, default=0)
            if not common and any(m.recorded_checkpoints for m in members):
                raise BadInput(f"population {self.group} has checkpoints but no resume state common to all members.")
            if common:
                self._restore(members, agent, [s[step] for s in states], step)
        except BaseException:
            # Refused before any step (a resume state damaged, missing or unsafe): every member stays as it was.
            for run in runs:
                self.registry.release_run(run)
            raise
        self.reporter.message(f"resuming population {self.group} ({len(members)} runs) at step {step:,}" if step else
                              f"population {self.group} saved nothing yet: restarting it from step 0")
        return self._train(members, agent, first_step=step)

    def _restore(self, members: list[Member], agent: StackedAgent, artifacts: list, step: int) -> None:
        """Every member's weights, optimizer states, replay and RNG as its resume state at `step` has them."""
        optimizer_states = []
        for k, (m, artifact) in enumerate(zip(members, artifacts)):
            state = load_resume_state(self.registry, artifact)
            agent.load_member_state_dict(k, state.agent)
            optimizer_states.append(state.optimizers)
            m.replay.load_state_dict(state.replay)
            m.generator.set_state(state.torch_rng)
            if step not in m.recorded_checkpoints:  # killed between its resume state and its checkpoint
                self._register_checkpoint(m, step, state.agent, state.val)
        agent.to(self.device)
        agent.load_optimizer_states(optimizer_states)

    # ------------------------------------------------------------------ the loop
    def _train(self, members: list[Member], agent: StackedAgent, first_step: int) -> list[TrainResult]:
        t = self.training
        agent.to(self.device)
        envs = MemberEnvs([m.env for m in members], self.device)  # the simulator on the agent's device
        seeds = [m.config.training.seed for m in members]
        generators = [m.generator for m in members]
        schedule = StepSchedule(t)
        updates_in_random_phase = members[0].agent.updates_during_random_phase
        logs = [MetricsLog(self.logs_dir, m.run_id, resume_step=first_step if first_step else None) for m in members]
        heartbeats = [Heartbeat(self.registry, m.run_id) for m in members]
        last_val: float | None = None
        step = first_step
        update_times: deque[float] = deque(maxlen=50)
        self.reporter.start(t.max_steps, first_step, t.random_steps)
        try:
            with StopRequests() as stops:
                for step, count, mode in schedule.batches(first_step, lambda: stops.requested is None):
                    agent.train()
                    agent.set_step(step)
                    episodes = play_member_episodes(envs, agent, torch.arange(step, step + count), seeds, mode,
                                                    generators)
                    returns = episodes.rewards.sum(dim=2).mean(dim=1)  # (K,) read below, after the updates are queued
                    metrics: list[dict[str, float]] = [{} for _ in members]
                    for i in range(count):
                        for k, m in enumerate(members):
                            m.replay.add(member_episodes(episodes, k, slice(i, i + 1)))
                        if schedule.updates_at(step, updates_in_random_phase) and members[0].replay.ready:
                            agent.set_step(step)
                            started = time.perf_counter()
                            batch = stack_batches([m.replay.sample(m.generator) for m in members])
                            metrics = self.harness.update(agent, batch.to(self.device), generators)
                            update_times.append(time.perf_counter() - started)
                        step += 1
                    episode_returns = returns.tolist()  # one host read per step
                    rows = [{"step": step, "episode_return": episode_returns[k], **metrics[k]} for k in range(len(members))]
                    if schedule.validates_at(step):
                        vals = self._evaluate(envs, agent, len(members), t.val_episodes, t.val_seed)
                        last_val = sum(v.mean for v in vals) / len(vals)
                        self._record_validations(members, step, vals, rows)
                        if schedule.saves_at(step):
                            self._save(members, agent, step, vals)
                    for log, row in zip(logs, rows):
                        log.write(row)
                    # one stacked update per step updates every member
                    update_seconds = sum(update_times) / len(update_times) if update_times else None
                    self.reporter.advance(TrainingProgress(step, t.max_steps, t.random_steps,
                                                           sum(episode_returns) / len(episode_returns),
                                                           last_val, update_seconds, updates_in_random_phase))
                    for heartbeat in heartbeats:
                        heartbeat.beat_if_due()

                def keep_testing() -> bool:
                    for heartbeat in heartbeats:
                        heartbeat.beat_if_due()
                    return stops.requested is None

                tests = self._test_checkpoints(members, keep_testing) if stops.requested is None else []
                stopped_by = stops.requested
        except BaseException as exc:
            for m in members:
                finish_after_error(self.registry, m.run_id, exc)
            raise
        finally:
            for log in logs:
                log.close()
            self.reporter.stop()
        if stopped_by is not None:
            for m in members:
                self.registry.finish_run(m.run_id, status="interrupted")
            raise RunInterrupted(f"population {self.group} ({len(members)} runs) stopped by {stopped_by} at step "
                                 f"{step:,}; every member is marked interrupted and keeps its checkpoints. Continue it "
                                 f"with `slatectl train {self.configs[0].agent_name} --resume {self.group}`.",
                                 stopped_by)
        results = []
        for m, member_tests in zip(members, tests):
            self.registry.finish_run(m.run_id, status="finished")
            results.append(TrainResult(run_id=m.run_id, checkpoints=self.registry.list_checkpoints(run_id=m.run_id),
                                       tests=member_tests))
        return results

    # ------------------------------------------------------------------ pieces
    def _evaluate(self, envs: MemberEnvs, agent: StackedAgent, K: int, episodes: int, seed: int) -> list[Evaluation]:
        """Greedy returns of every member on the same fixed users (`seed`), as the solo `evaluate`."""
        agent.eval()
        try:
            batch = play_member_episodes(envs, agent, torch.arange(episodes), [seed] * K, "greedy", [])
        finally:
            agent.train()
        returns = batch.rewards.sum(dim=2).double().cpu()  # (K, episodes), read once
        return [Evaluation(float(r.mean()), float(r.std()) if episodes > 1 else 0.0, episodes) for r in returns]

    def _record_validations(self, members: list[Member], step: int, vals: list[Evaluation], rows: list[dict]) -> None:
        per_env: dict[str, list[float]] = {}
        for m, val, row in zip(members, vals, rows):
            row["val_return"] = val.mean
            per_env.setdefault(m.config.env, []).append(val.mean)
            if step not in m.recorded_validations:  # a resume from an earlier common step redoes this one
                self.registry.record_validation(m.run_id, step, val.mean, val.std, val.episodes)
                m.recorded_validations.add(step)
        text = ", ".join(f"{env} {sum(v) / len(v):.1f}" for env, v in per_env.items())
        self.reporter.message(f"step {step:,}: mean validation return per env: {text}")

    def _save(self, members: list[Member], agent: StackedAgent, step: int, vals: list[Evaluation]) -> None:
        """The save of `checkpoints.save_step` phase by phase over the members (module doc)."""
        states = [ResumeState(step, agent.member_state_dict(k), agent.member_optimizer_states(k), m.replay.state_dict(),
                              m.generator.get_state(), vals[k]) for k, m in enumerate(members)]
        for m, state in zip(members, states):
            register_resume_state(self.registry, m.run_id, m.config.env, state)
        for m, state in zip(members, states):
            if step not in m.recorded_checkpoints:
                self._register_checkpoint(m, step, state.agent, state.val)
        for m in members:
            self.registry.prune_resume_states(m.run_id, keep=self.training.keep_resume)

    def _register_checkpoint(self, m: Member, step: int, weights: dict, val: Evaluation) -> None:
        register_checkpoint(self.registry, m.run_id, step, weights, val, m.env.config.episode_length,
                            trained_from_start(m.agent))
        m.recorded_checkpoints.add(step)

    def _test_checkpoints(self, members: list[Member], keep_going) -> list[list[TestResult]]:
        """Every saved checkpoint of every member on the fixed test users, each member with its own layout
        agent (the solo run's test, exactly)."""
        t = self.training
        return [test_checkpoints(self.registry, m.run_id, m.env, m.agent, t.test_episodes, t.test_seed, self.device,
                                 keep_going=keep_going) for m in members]
