"""The training loop: K ≥ 1 runs of one agent in lockstep; a solo run is a population of one (docs/population.md
says how members, groups, leases, stops, saves and resumes go).

One *step* is the reference's global_step: one training episode of H = 100 env steps followed by one
agent update (updates are skipped while step < random_steps, except for agents that train from the start).
Steps go in batches (`schedule.py`). Validation runs every `val_every` steps and at every save step; each
save step registers a resume state and a checkpoint per run (`checkpoints.py`). At the end every saved
checkpoint is tested (`evaluation.py`). The runs' weights are stacked along a leading member dimension so
one batched kernel serves all of them (the agent's `AgentSpec.population`, a `StackedAgent`).

Lightning Fabric (`slatectl.harness.TrainingHarness`) picks the device and precision, seeds, and runs the
agent's update (docs/lightning.md); the loop itself is our own code. On a GPU the simulator, the agent and
the replay all live on it, and the host reads values once per batch of steps (returns, update metrics).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from slatectl.agents.base import ActMode
from slatectl.agents.stacked import StackedAgent
from slatectl.domain import DeviceChoice
from slatectl.errors import BadInput, JobFailed
from slatectl.harness import seed_everything, training_harness
from slatectl.registry import Checkpoint, Registry, Run
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.assembly import build_agent, ensure_agent_inputs, ensure_population_gems, registered_agent_inputs
from slatectl.train.checkpoints import (ResumeState, load_resume_state, register_checkpoint, register_resume_state,
                                        resume_states_by_step)
from slatectl.train.config import RunConfig, run_config_from_dict
from slatectl.train.episodes import member_episodes, play_member_episodes, stack_batches
from slatectl.train.evaluation import Evaluation, TestResult, evaluate_members, record_checkpoint_tests
from slatectl.train.lifecycle import Heartbeat, StopRequests, signal_exit_code
from slatectl.train.metrics_log import MetricsLog
from slatectl.train.population import Member, check_population, claim_members, group_runs, new_group_id
from slatectl.train.progress import TrainingProgress, TrainingReporter
from slatectl.train.replay import EpisodeReplay
from slatectl.train.schedule import StepSchedule


class RunInterrupted(JobFailed):
    """The runs stopped at a safe point on a signal; they are recorded as `interrupted` and can be resumed.
    Its exit code is the shell's for that signal (`signal_exit_code`)."""

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.args = (message, signal_name)  # survives pickling from a --jobs worker
        self.signal_name = signal_name
        self.exit_code = signal_exit_code(signal_name)


@dataclass
class TrainResult:
    run_id: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    tests: list[TestResult] = field(default_factory=list)


class Trainer:
    """Trains (or resumes) the runs of `configs` (one agent, one schedule) in lockstep; records each run."""

    def __init__(self, registry: Registry, configs: RunConfig | Sequence[RunConfig],
                 reporter: TrainingReporter | None = None, logs_dir: Path | None = None):
        configs = [configs] if isinstance(configs, RunConfig) else list(configs)
        check_population(configs)
        self.spec = configs[0].spec
        if self.spec.population is None:
            raise BadInput(f"agent {configs[0].agent_name!r} has no stacked form and cannot train.")
        self.registry, self.logs_dir = registry, logs_dir
        self.reporter = reporter or TrainingReporter()
        self.harness = training_harness(configs[0].training.device, configs[0].training.precision,
                                        say=self.reporter.message)  # Lightning Fabric: device, precision
        self.device = self.harness.device
        # The resolved device (never `auto`) is recorded, and `gems.accelerator` follows it; on a CPU both
        # are "cpu", the values every earlier run recorded, so a CPU run's config and GeMS are unchanged.
        self.configs = [replace(cfg, training=replace(cfg.training, device=DeviceChoice(self.device.type)),
                                gems=replace(cfg.gems, accelerator=self.device.type)) for cfg in configs]
        self.training = self.configs[0].training
        self.schedule = StepSchedule(self.training)
        self.update_times: deque[float] = deque(maxlen=50)  # the progress display's mean update time
        self.group: str | None = None

    def run(self, command: str | None = None, group: str | None = None) -> list[TrainResult]:
        """Train new runs. One config trains a solo run unless `group` is given; several always form a
        group (`group`, or a new id)."""
        members = self.build_members()
        self.group = group or (new_group_id() if len(members) > 1 else None)
        if warning := self.training.untrained_warning(members[0].agent.updates_during_random_phase):
            self.reporter.message(warning)
        for k, m in enumerate(members):
            config = recorded_config(m.config, self.device)
            if self.group is not None:
                config["population"] = {"group": self.group, "member": k, "size": len(members)}
            m.run_id = self.registry.start_run(m.config.agent_name, m.config.env, m.config.training.seed, config,
                                               command=command or shlex.join(sys.argv), inputs=m.inputs.artifact_ids,
                                               group_id=self.group).id
        cfg, steps = members[0].config, f"{self.training.max_steps:,} steps"
        self.reporter.message(f"run {members[0].run_id}: {cfg.agent_name} on {cfg.env}, {steps} on {self.device.type}"
                              if self.group is None else
                              f"population {self.group}: {len(members)} runs of {cfg.agent_name} (runs "
                              f"{members[0].run_id}–{members[-1].run_id}), {steps} each on {self.device.type}")
        return self._train(members, self.spec.population([m.agent for m in members]), first_step=0)

    @classmethod
    def resume(cls, registry: Registry, target: int | str, reporter: TrainingReporter | None = None,
               logs_dir: Path | None = None) -> list[TrainResult]:
        """Continue run `target` (an id) from its newest resume state, or every member of population `target`
        (a group id) from the newest step whose resume state all of them have."""
        group = None if isinstance(target, int) else target
        runs = [registry.get_run(target)] if group is None else group_runs(registry, group)
        trainer = cls(registry, [run_config_from_dict(r.config) for r in runs], reporter, logs_dir)
        return trainer._claim_and_resume(runs, group)

    def build_members(self, runs: list[Run] | None = None) -> list[Member]:
        """Each member built as its solo run builds its agent (docs/population.md; the missing GeMS of several
        members first pretrained as one stack); a resumed member from exactly the inputs its run recorded."""
        members: list[Member] = []
        if runs is None:
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

    def _claim_and_resume(self, runs: list[Run], group: str | None) -> list[TrainResult]:
        self.group = group
        claim_members(self.registry, runs)  # refuses (BadInput) a run whose lease is still live
        try:
            members = self.build_members(runs)
            for m, run in zip(members, runs):
                m.run_id = run.id
                m.recorded_validations = {v.step for v in self.registry.validations(run.id)}
                m.recorded_checkpoints = {c.step for c in self.registry.list_checkpoints(run_id=run.id)}
            agent = self.spec.population([m.agent for m in members])
            states = [resume_states_by_step(self.registry, m.run_id, m.config.env) for m in members]
            common = set.intersection(*(set(s) for s in states))
            step = max(common, default=0)
            if not common and any(m.recorded_checkpoints for m in members):
                raise BadInput(f"{self._name(members)} has checkpoints but no resume state"
                               f"{' common to all members' if len(members) > 1 else ''}; it cannot be resumed.")
            if common:
                self._restore(members, agent, [s[step] for s in states], step)
        except BaseException:
            # Refused before any step (a resume state damaged, missing or unsafe): every run stays as it was.
            for run in runs:
                self.registry.release_run(run)
            raise
        self.reporter.message(f"resuming {self._name(members)} at step {step:,}" if step else
                              f"{self._name(members)} saved nothing yet: restarting it from step 0")
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
        agent.set_step(step)

    def _train(self, members: list[Member], agent: StackedAgent, first_step: int) -> list[TrainResult]:
        t = self.training
        agent.to(self.device)
        envs = MemberEnvs([m.env for m in members], self.device)  # the simulator on the agent's device
        logs = [MetricsLog(self.logs_dir, m.run_id, resume_step=first_step if first_step else None) for m in members]
        heartbeat = Heartbeat(self.registry, [m.run_id for m in members])
        last_val: float | None = None
        step = first_step
        self.reporter.start(t.max_steps, first_step, t.random_steps)
        try:
            with StopRequests() as stops:
                for step, count, mode in self.schedule.batches(first_step, lambda: stops.requested is None):
                    step, rows = self._play_and_update(members, agent, envs, step, count, mode)
                    if self.schedule.validates_at(step):
                        last_val = self._validate(members, agent, envs, step, rows)
                    for log, row in zip(logs, rows):
                        log.write(row)
                    mean_return = sum(row["episode_return"] for row in rows) / len(rows)
                    update_s = sum(self.update_times) / len(self.update_times) if self.update_times else None
                    self.reporter.advance(TrainingProgress(step, t.max_steps, t.random_steps, mean_return, last_val,
                                                           update_s, agent.updates_during_random_phase))
                    heartbeat.beat_if_due()

                def keep_testing() -> bool:
                    heartbeat.beat_if_due()
                    return stops.requested is None

                tests = (record_checkpoint_tests(self.registry, [m.run_id for m in members], envs, agent,
                                                 t.test_episodes, t.test_seed, keep_going=keep_testing)
                         if stops.requested is None else [])
                stopped_by = stops.requested
        except BaseException as exc:  # a second Ctrl-C: `interrupted`; any other error: `failed` with it
            interrupted = isinstance(exc, KeyboardInterrupt)
            for m in members:
                self.registry.finish_run(m.run_id, status="interrupted" if interrupted else "failed",
                                         error=None if interrupted else f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            for log in logs:
                log.close()
            self.reporter.stop()
        return self._conclude(members, stopped_by, step, tests)

    def _play_and_update(self, members: list[Member], agent: StackedAgent, envs: MemberEnvs, step: int, count: int,
                         mode: ActMode) -> tuple[int, list[dict[str, Any]]]:
        """The `count` training episodes from `step` on, each step followed by its update when one is due;
        returns the step after them and each member's metrics row."""
        generators = [m.generator for m in members]
        agent.train()
        agent.set_step(step)
        episodes = play_member_episodes(envs, agent, torch.arange(step, step + count),
                                        [m.config.training.seed for m in members], mode, generators)
        returns = episodes.rewards.sum(dim=2).mean(dim=1)  # (K,) read below, after the updates are queued
        metrics: list[dict[str, float]] = [{} for _ in members]
        for i in range(count):
            for k, m in enumerate(members):
                m.replay.add(member_episodes(episodes, k, slice(i, i + 1)))
            if self.schedule.updates_at(step, agent.updates_during_random_phase) and members[0].replay.ready:
                agent.set_step(step)
                started = time.perf_counter()
                batch = stack_batches([m.replay.sample(m.generator) for m in members])
                metrics = self.harness.update(agent, batch.to(self.device), generators)  # metrics read once
                self.update_times.append(time.perf_counter() - started)
            step += 1
        # returns.tolist(): one host read per batch of steps
        return step, [{"step": step, "episode_return": r, **m} for r, m in zip(returns.tolist(), metrics)]

    def _validate(self, members: list[Member], agent: StackedAgent, envs: MemberEnvs, step: int,
                  rows: list[dict[str, Any]]) -> float:
        """Every member's validation (recorded once per step, and in its row), then the save when `step` is
        a save step; returns the members' mean validation return."""
        vals = evaluate_members(envs, agent, self.training.val_episodes, self.training.val_seed)
        per_env: dict[str, list[float]] = {}
        for m, val, row in zip(members, vals, rows):
            row["val_return"] = val.mean
            per_env.setdefault(m.config.env, []).append(val.mean)
            if step not in m.recorded_validations:  # a resumed run redoes the steps after its resume state
                self.registry.record_validation(m.run_id, step, val.mean, val.std, val.episodes)
                m.recorded_validations.add(step)
        if len(members) > 1:
            text = ", ".join(f"{env} {sum(v) / len(v):.1f}" for env, v in per_env.items())
            self.reporter.message(f"step {step:,}: mean validation return per env: {text}")
        if step in self.schedule.save_steps:
            self._save(members, agent, step, vals)
        return sum(v.mean for v in vals) / len(vals)

    def _conclude(self, members: list[Member], stopped_by: str | None, step: int,
                  tests: list[list[TestResult]]) -> list[TrainResult]:
        """Every run `finished` with its checkpoints and tests; or, stopped by a signal, `interrupted`."""
        for m in members:
            self.registry.finish_run(m.run_id, status="finished" if stopped_by is None else "interrupted")
        if stopped_by is None:
            return [TrainResult(m.run_id, self.registry.list_checkpoints(run_id=m.run_id), member_tests)
                    for m, member_tests in zip(members, tests)]
        if self.group is None:
            run_id = members[0].run_id
            kept = len(self.registry.list_checkpoints(run_id=run_id))
            raise RunInterrupted(f"run {run_id} stopped by {stopped_by} at step {step:,} and is marked interrupted; "
                                 f"its {kept} checkpoint{'' if kept == 1 else 's'} stay registered. Continue it "
                                 f"with `slatectl train --resume {run_id}`.", stopped_by)
        raise RunInterrupted(f"population {self.group} ({len(members)} runs) stopped by {stopped_by} at step {step:,}; "
                             f"every member is marked interrupted and keeps its checkpoints. Continue it with "
                             f"`slatectl train {members[0].config.agent_name} --resume {self.group}`.", stopped_by)

    def _save(self, members: list[Member], agent: StackedAgent, step: int, vals: list[Evaluation]) -> None:
        """Every resume state, then every checkpoint, then pruning: a kill part-way leaves a step every run can
        resume from."""
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
                            True if m.agent.updates_during_random_phase else None)
        m.recorded_checkpoints.add(step)

    def _name(self, members: list[Member]) -> str:
        return f"run {members[0].run_id}" if self.group is None else f"population {self.group} ({len(members)} runs)"


def recorded_config(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """The resolved config, plus how the process ran (not part of the config: thread count, device)."""
    recorded = config.to_dict()
    recorded["training"]["device"] = device.type  # never `auto`: a resumed run continues where it ran
    return {**recorded, "runtime": {"torch_threads": torch.get_num_threads(), "device": str(device)}}
