"""The online training loop: collect episodes, update the agent, validate and checkpoint on schedule.

One *step* is the reference's global_step: one training episode of H = 100 env steps followed by one
agent update (updates are skipped while step < random_steps, except for agents that train from the start).
Validation runs every `val_every` steps and at every save step; each save step registers a resume state
and a checkpoint (`checkpoints.py`). At the end every saved checkpoint is tested (`evaluation.py`).

Batching that keeps the algorithm's semantics: random-phase episodes are collected `random_phase_batch`
at a time (the policy is random there, so the result is the same as one by one); validation and test run
all their users at once (the policy is fixed). During learning `parallel_episodes` (default 1, the
reference) episodes are collected with one policy before their updates, trading policy freshness for speed.

Plain PyTorch with an explicit device and seed (`slatectl.harness`). On a GPU the simulator, the agent
and the replay all live on it (`simulator_on`, `EpisodeReplay(device=)`): acting sends nothing to the
host per env step, learning-phase episodes replay a captured CUDA graph (`captured_episodes.py`), and the
host reads values once per batch of steps (the mean return, and the update's metrics, which each agent
reads in one transfer). On the CPU the same code runs, with the same numbers
as before. SIGTERM/SIGHUP/Ctrl-C stop the run
between batches of steps and mark it `interrupted` (`lifecycle.py`); its checkpoints stay registered and
`--resume` continues from the last one.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from slatectl.agents.base import ActMode, Agent, EpisodeBatch
from slatectl.errors import BadInput, JobFailed
from slatectl.harness import seed_everything, training_harness
from slatectl.registry import Checkpoint, Registry
from slatectl.sim.topicrec import TopicRec
from slatectl.train.assembly import build_agent, ensure_agent_inputs, registered_agent_inputs
from slatectl.train.captured_episodes import TRAIN_CUDA_GRAPH_ENV, CapturedEpisodes
from slatectl.train.checkpoints import capture_resume_state, latest_resume_state, register_checkpoint, save_step
from slatectl.train.config import RunConfig, run_config_from_dict
from slatectl.train.episodes import play_episodes, simulator_device
from slatectl.train.evaluation import TestResult, evaluate, test_checkpoints
from slatectl.train.lifecycle import Heartbeat, StopRequests, signal_exit_code
from slatectl.train.metrics_log import MetricsLog
from slatectl.train.progress import SilentReporter, TrainingProgress, TrainingReporter
from slatectl.train.replay import EpisodeReplay
from slatectl.train.schedule import StepSchedule


class RunInterrupted(JobFailed):
    """The run stopped at a safe point on a signal; it is recorded as `interrupted` and can be resumed.
    Its exit code is the shell's for that signal (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

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


@dataclass
class StartedRun:
    """A recorded run with its freshly built env and agent, not trained yet (`Trainer.start`)."""

    run_id: int
    env: TopicRec
    agent: Agent
    rng_state: torch.Tensor  # the torch RNG state right after the agent was built


class Trainer:
    """Runs (or resumes) one training run and records everything in the registry."""

    def __init__(self, registry: Registry, config: RunConfig, reporter: TrainingReporter | None = None,
                 logs_dir: Path | None = None):
        self.registry = registry
        self.config = config
        self.reporter = reporter or SilentReporter()
        self.logs_dir = logs_dir
        # `auto` (the default) takes CUDA when torch sees a GPU and says so; `cuda` without one is BadInput.
        self.harness = training_harness(config.training.device, config.training.precision,
                                        say=self.reporter.message)
        self.device = self.harness.device
        self.config = on_device(config, self.device)

    # ------------------------------------------------------------------ entry points
    def run(self, command: str | None = None) -> TrainResult:
        return self.train_started(self.start(command))

    def start(self, command: str | None = None, group_id: str | None = None,
              population: dict[str, Any] | None = None) -> StartedRun:
        """Seed, build the agent and record the run (its lease held by this process); `train_started`
        trains it. A population's members record their group (`group_id`, `population` in the config)."""
        cfg = self.config
        seed_everything(cfg.training.seed)
        resolved = ensure_agent_inputs(self.registry, cfg, self.reporter.message)
        env, agent = build_agent(cfg, resolved.inputs)
        warning = cfg.training.untrained_warning(agent.updates_during_random_phase)
        if warning:
            self.reporter.message(warning)
        config = recorded_config(cfg, self.device)
        if population is not None:
            config["population"] = population
        run = self.registry.start_run(cfg.agent_name, cfg.env, cfg.training.seed, config,
                                      command=command or shlex.join(sys.argv), inputs=resolved.artifact_ids,
                                      group_id=group_id)
        self.reporter.message(f"run {run.id}: {cfg.agent_name} on {cfg.env}, {cfg.training.max_steps:,} steps on {self.device.type}")
        return StartedRun(run.id, env, agent, torch.get_rng_state())

    def train_started(self, started: StartedRun) -> TrainResult:
        torch.set_rng_state(started.rng_state)  # as if it trained right after `start`
        return self._train(started.run_id, started.env, started.agent, self._new_replay(), first_step=0, resumed=False)

    @classmethod
    def resume(cls, registry: Registry, run_id: int, reporter: TrainingReporter | None = None,
               logs_dir: Path | None = None) -> TrainResult:
        run = registry.get_run(run_id)
        trainer = cls(registry, run_config_from_dict(run.config), reporter, logs_dir)
        registry.claim_run(run_id)  # refuses (BadInput) a run whose lease is still live
        return trainer._resume(run)

    def _resume(self, run) -> TrainResult:
        cfg = self.config
        try:
            seed_everything(cfg.training.seed)
            env, agent = build_agent(cfg, registered_agent_inputs(self.registry, run.inputs).inputs)
            replay = self._new_replay()
            state = latest_resume_state(self.registry, run.id, cfg.env)
            if state is None and self.registry.list_checkpoints(run_id=run.id):
                raise BadInput(f"run {run.id} has checkpoints but no resume state; it cannot be resumed.")
            if state is not None:
                state.restore(agent, replay, self.device)
            if state is not None and not any(c.step == state.step for c in self.registry.list_checkpoints(run_id=run.id)):
                # Killed after the resume state was written but before its checkpoint: register it now.
                register_checkpoint(self.registry, run.id, state.step, state.agent, state.val, env.config.episode_length,
                                    trained_from_start(agent))
        except BaseException:
            # Refused before any step (resume state damaged, missing or unsafe): the run stays as it was.
            self.registry.release_run(run)
            raise
        if state is None:
            self.reporter.message(f"run {run.id} saved nothing yet: restarting it from step 0")
            return self._train(run.id, env, agent, replay, first_step=0, resumed=True)
        self.reporter.message(f"resuming run {run.id} at step {state.step:,}")
        return self._train(run.id, env, agent, replay, first_step=state.step, resumed=True)

    # ------------------------------------------------------------------ the loop
    def _train(self, run_id: int, env: TopicRec, agent: Agent, replay: EpisodeReplay, first_step: int,
               resumed: bool) -> TrainResult:
        t = self.config.training
        agent.to(self.device)
        env = simulator_on(env, self.device)
        play = self._episode_player(env, agent)
        schedule = StepSchedule(t)
        log = MetricsLog(self.logs_dir, run_id, resume_step=first_step if resumed else None)
        heartbeat = Heartbeat(self.registry, run_id)
        # A resumed run redoes the steps after its resume state; validations it recorded there stay.
        recorded_validations = {v.step for v in self.registry.validations(run_id)} if resumed else set()
        last_val: float | None = None
        step = first_step
        update_times: deque[float] = deque(maxlen=50)
        result = TrainResult(run_id=run_id)
        self.reporter.start(t.max_steps, first_step, t.random_steps)
        try:
            with StopRequests() as stops:
                for step, count, mode in schedule.batches(first_step, lambda: stops.requested is None):
                    agent.train()
                    agent.set_step(step)
                    episodes = play(step, count, mode)
                    mean_return = episodes.rewards.sum(dim=1).mean()  # read below, after the updates are queued
                    metrics: dict[str, float] = {}
                    for i in range(count):
                        replay.add(episodes.select(i))
                        if schedule.updates_at(step, agent.updates_during_random_phase) and replay.ready:
                            agent.set_step(step)
                            started = time.perf_counter()
                            metrics = self.harness.update(agent, replay.sample().to(self.device))  # metrics read once
                            update_times.append(time.perf_counter() - started)
                        step += 1
                    episode_return = float(mean_return)
                    row: dict[str, Any] = {"step": step, "episode_return": episode_return, **metrics}
                    if schedule.validates_at(step):
                        val = evaluate(env, agent, t.val_episodes, t.val_seed, self.device)
                        last_val = row["val_return"] = val.mean
                        if step not in recorded_validations:
                            self.registry.record_validation(run_id, step, val.mean, val.std, val.episodes)
                        if schedule.saves_at(step):
                            save_step(self.registry, run_id, self.config.env, env.config.episode_length,
                                      capture_resume_state(step, agent, replay, val), t.keep_resume,
                                      trained_from_start(agent))
                    log.write(row)
                    update_seconds = sum(update_times) / len(update_times) if update_times else None
                    self.reporter.advance(TrainingProgress(step, t.max_steps, t.random_steps, episode_return,
                                                           last_val, update_seconds, agent.updates_during_random_phase))
                    heartbeat.beat_if_due()
                def keep_testing() -> bool:
                    heartbeat.beat_if_due()
                    return stops.requested is None

                if stops.requested is None:
                    result.tests = test_checkpoints(self.registry, run_id, env, agent, t.test_episodes, t.test_seed,
                                                    self.device, keep_going=keep_testing)
                stopped_by = stops.requested
        except BaseException as exc:
            self._finish(run_id, exc)
            raise
        finally:
            log.close()
            self.reporter.stop()
        if stopped_by is not None:
            self.registry.finish_run(run_id, status="interrupted")
            kept = len(self.registry.list_checkpoints(run_id=run_id))
            raise RunInterrupted(f"run {run_id} stopped by {stopped_by} at step {step:,} and is marked interrupted; "
                                 f"its {kept} checkpoint{'' if kept == 1 else 's'} stay registered. Continue it with "
                                 f"`slatectl train --resume {run_id}`.", stopped_by)
        self.registry.finish_run(run_id, status="finished")
        result.checkpoints = self.registry.list_checkpoints(run_id=run_id)
        return result

    # ------------------------------------------------------------------ pieces
    def _episode_player(self, env: TopicRec, agent: Agent) -> Callable[[int, int, ActMode], EpisodeBatch]:
        """play(step, count, mode): the training episodes of users step … step+count−1. On CUDA the
        learning-phase batches replay a captured CUDA graph (`captured_episodes.py`; off with
        SLATECTL_TRAIN_CUDA_GRAPH=0); everything else, and every CPU run, plays eagerly."""
        seed = self.config.training.seed
        capture = self.device.type == "cuda" and os.environ.get(TRAIN_CUDA_GRAPH_ENV, "1") != "0"
        graphs: dict[tuple[int, str], CapturedEpisodes] = {}

        def play(step: int, count: int, mode: ActMode) -> EpisodeBatch:
            if capture and mode == "explore":
                player = graphs.setdefault((count, mode), CapturedEpisodes(env, agent, seed, mode, self.device))
                return player(torch.arange(step, step + count, device=self.device))
            return play_episodes(env, agent, torch.arange(step, step + count), seed, mode, self.device)

        return play

    def _new_replay(self) -> EpisodeReplay:
        return EpisodeReplay(self.config.agent.capacity, self.config.agent.batch_size, self.device)

    def _finish(self, run_id: int, exc: BaseException) -> None:
        finish_after_error(self.registry, run_id, exc)


def simulator_on(env: TopicRec, device: torch.device) -> TopicRec:
    """The run's simulator on the agent's device, so that acting needs no host round trip per env step.

    The simulator runs where its item table is; a plain TopicRec is rebuilt around a moved copy of the
    table (same config, same table, same counter-based draws: the same users)."""
    if simulator_device(env).type == device.type or type(env) is not TopicRec:
        return env
    return TopicRec(env.config, env.item_embeddings.to(device))


def on_device(config: RunConfig, device: torch.device) -> RunConfig:
    """`config` with its device resolved (`auto` → cpu or cuda): the run records where it ran, and the
    GeMS a run pretrains for itself is pretrained there too (`gems.accelerator`). On a CPU both are
    "cpu", the values every earlier run recorded, so a CPU run's config and GeMS inputs are unchanged."""
    return replace(config, training=replace(config.training, device=device.type),
                   gems=replace(config.gems, accelerator=device.type))


def recorded_config(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """The resolved config, plus how the process ran (not part of the config: thread count, device)."""
    recorded = config.to_dict()
    recorded["training"]["device"] = device.type  # never `auto`: a resumed run continues where it ran
    return {**recorded, "runtime": {"torch_threads": torch.get_num_threads(), "device": str(device)}}


def finish_after_error(registry: Registry, run_id: int, exc: BaseException) -> None:
    """End a run that an exception stopped: `interrupted` for a second Ctrl-C, `failed` with the error else."""
    if isinstance(exc, KeyboardInterrupt):
        registry.finish_run(run_id, status="interrupted")
    else:
        registry.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])


def trained_from_start(agent: Agent) -> bool | None:
    """True for agents that update in the random phase too; None lets the registry's step rule decide."""
    return True if agent.updates_during_random_phase else None
