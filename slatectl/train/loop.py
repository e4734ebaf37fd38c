"""The online training loop: collect episodes, update the agent, validate and checkpoint on schedule.

One *step* is the reference's global_step: one training episode of H = 100 env steps followed by one
agent update (updates are skipped while step < random_steps, except for agents that train from the start).
Validation (val_episodes users with fixed seeds, greedy policy) runs every `val_every` steps and at every
save step; each save step registers a checkpoint (weights) with its validation return, plus a resume state
(optimizers, replay, RNG). At the end every saved checkpoint and the best one are tested on test_episodes
fixed users.

Batching that keeps the algorithm's semantics: random-phase episodes are collected `random_phase_batch`
at a time (the policy is random there, so the result is the same as one by one); validation and test run
all their users at once (the policy is fixed). During learning `parallel_episodes` (default 1, the
reference) episodes are collected with one policy before their updates, trading policy freshness for speed.
Lightning Fabric provides the device, seeding and backward.
"""

from __future__ import annotations

import csv
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from lightning_fabric import Fabric

from slatectl.registry import Artifact, Checkpoint, Registry
from slatectl.agents import AGENTS
from slatectl.agents.base import Agent
from slatectl.errors import BadInput
from slatectl.sim.config import load_env_config
from slatectl.sim.factory import make_env
from slatectl.sim.topicrec import TopicRec
from slatectl.train import inputs as pretrained
from slatectl.train.config import MF_SEED, RunConfig, run_config_from_dict
from slatectl.train.episodes import play_episodes
from slatectl.train.replay import EpisodeReplay

RESUME_KIND = "resume-state"


class TrainingReporter(Protocol):
    def message(self, text: str) -> None: ...
    def start(self, total_steps: int, first_step: int) -> None: ...
    def advance(self, step: int, episode_return: float, val_return: float | None, updates_per_s: float) -> None: ...
    def stop(self) -> None: ...


class SilentReporter:
    def message(self, text: str) -> None:
        pass

    def start(self, total_steps: int, first_step: int) -> None:
        pass

    def advance(self, step: int, episode_return: float, val_return: float | None, updates_per_s: float) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class TestResult:
    checkpoint_id: int
    step: int
    best: bool
    val_return: float
    test_mean: float
    test_std: float
    episodes: int


@dataclass
class TrainResult:
    run_id: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    tests: list[TestResult] = field(default_factory=list)


@dataclass
class _Setup:
    env: TopicRec
    agent: Agent
    input_ids: list[int]


def _build_agent(registry: Registry, config: RunConfig, reporter: TrainingReporter) -> _Setup:
    env = make_env(config.env)
    spec = AGENTS[config.agent_name]
    agent_inputs: dict[str, Any] = {}
    input_ids: list[int] = []
    needs = spec.needs_for(config.agent)
    if needs:
        logged = pretrained.ensure_logged_data(registry, env, config.logged, say=reporter.message)
        if "gems" in needs:
            gems_artifact = pretrained.ensure_gems(registry, env, logged, config.gems, config.training.seed, say=reporter.message)
            agent_inputs["gems"], agent_inputs["gems_bounds"] = pretrained.load_gems(registry, gems_artifact)
            input_ids.append(gems_artifact.id)
        if "mf" in needs:
            mf_artifact = pretrained.ensure_mf(registry, env, logged, config.mf, MF_SEED, say=reporter.message)
            agent_inputs["mf"] = pretrained.load_mf(registry, mf_artifact)
            input_ids.append(mf_artifact.id)
        input_ids.insert(0, logged.id)
    agent = spec.build(config.agent, env, agent_inputs)
    return _Setup(env=env, agent=agent, input_ids=input_ids)


def build_agent_for_run(registry: Registry, config: RunConfig, reporter: TrainingReporter | None = None) -> tuple[TopicRec, Agent]:
    """Rebuild a run's env and agent (with its registered pretrained inputs) — used by collection too."""
    setup = _build_agent(registry, config, reporter or SilentReporter())
    return setup.env, setup.agent


def _resume_states(registry: Registry, run_id: int, env: str) -> list[Artifact]:
    return sorted((a for a in registry.list_artifacts(kind=RESUME_KIND, env=env) if a.run_id == run_id),
                  key=lambda a: a.config["step"])


class Trainer:
    """Runs (or resumes) one training run and records everything in the registry."""

    def __init__(self, registry: Registry, config: RunConfig, reporter: TrainingReporter | None = None,
                 logs_dir: Path | None = None):
        self.registry = registry
        self.config = config
        self.reporter = reporter or SilentReporter()
        self.logs_dir = logs_dir
        t = config.training
        self.fabric = Fabric(accelerator=t.device, devices=1, precision="32-true")
        if t.device == "cuda" and not torch.cuda.is_available():
            raise BadInput("--device cuda was asked for but no CUDA device is available; use --device cpu.")

    # ------------------------------------------------------------------ entry points
    def run(self, command: str | None = None) -> TrainResult:
        cfg = self.config
        self.fabric.seed_everything(cfg.training.seed, verbose=False)
        setup = _build_agent(self.registry, cfg, self.reporter)
        run = self.registry.start_run(cfg.agent_name, cfg.env, cfg.training.seed, cfg.to_dict(),
                                      command=command or shlex.join(sys.argv), inputs=setup.input_ids)
        self.reporter.message(f"run {run.id}: {cfg.agent_name} on {cfg.env}, {cfg.training.max_steps:,} steps")
        params = cfg.agent
        replay = EpisodeReplay(params.capacity, params.batch_size)
        return self._train(run.id, setup, replay, first_step=0)

    @classmethod
    def resume(cls, registry: Registry, run_id: int, reporter: TrainingReporter | None = None,
               logs_dir: Path | None = None) -> TrainResult:
        run = registry.get_run(run_id)
        config = run_config_from_dict(run.config)
        trainer = cls(registry, config, reporter, logs_dir)
        return trainer._resume(run)

    def _resume(self, run) -> TrainResult:
        cfg = self.config
        setup = _build_agent(self.registry, cfg, self.reporter)
        replay = EpisodeReplay(cfg.agent.capacity, cfg.agent.batch_size)
        states = _resume_states(self.registry, run.id, cfg.env)
        if not states:
            if self.registry.list_checkpoints(run_id=run.id):
                raise BadInput(f"run {run.id} has checkpoints but no resume state; it cannot be resumed.")
            self.reporter.message(f"run {run.id} saved nothing yet: restarting it from step 0")
            self.fabric.seed_everything(cfg.training.seed, verbose=False)
            return self._train(run.id, setup, replay, first_step=0)
        latest = states[-1]
        state = self.registry.load_artifact_state(latest.id)
        setup.agent.load_state_dict(state["agent"])
        setup.agent.to(self.fabric.device)  # before the optimizer states, so they land on the same device
        for name, optimizer in setup.agent.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        replay.load_state_dict(state["replay"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        if not any(c.step == step for c in self.registry.list_checkpoints(run_id=run.id)):
            # Killed after the resume state was written but before its checkpoint: register it now.
            self._register_checkpoint(run.id, step, setup.agent, state["val"])
        self.reporter.message(f"resuming run {run.id} at step {step:,}")
        return self._train(run.id, setup, replay, first_step=step)

    # ------------------------------------------------------------------ the loop
    def _train(self, run_id: int, setup: _Setup, replay: EpisodeReplay, first_step: int) -> TrainResult:
        cfg, t = self.config, self.config.training
        env, agent = setup.env, setup.agent
        agent.to(self.fabric.device)
        save_steps = set(t.save_steps())
        boundaries = sorted(save_steps | set(range(t.val_every, t.max_steps + 1, t.val_every)))
        log = self._open_log(run_id, append=first_step > 0)
        last_val: float | None = None
        step = first_step
        update_times: list[float] = []
        self.reporter.start(t.max_steps, first_step)
        try:
            while step < t.max_steps:
                next_boundary = next((b for b in boundaries if b > step), t.max_steps)
                random_phase = step < t.random_steps
                limit = t.random_phase_batch if random_phase else t.parallel_episodes
                count = min(limit, next_boundary - step, (t.random_steps - step) if random_phase else limit)
                agent.train()
                if hasattr(agent, "set_step"):
                    agent.set_step(step)
                episodes = play_episodes(env, agent, torch.arange(step, step + count), t.seed,
                                         "random" if random_phase else "explore", self.fabric.device)
                returns = episodes.rewards.sum(dim=1)
                metrics: dict[str, float] = {}
                for i in range(count):
                    replay.add(_select(episodes, i))
                    if _should_update(agent, step, t.random_steps) and replay.ready:
                        if hasattr(agent, "set_step"):
                            agent.set_step(step)
                        started = time.perf_counter()
                        metrics = agent.update(replay.sample().to(self.fabric.device), self.fabric.backward)
                        update_times.append(time.perf_counter() - started)
                    step += 1
                updates_per_s = len(update_times[-50:]) / max(sum(update_times[-50:]), 1e-9) if update_times else 0.0
                row = {"step": step, "episode_return": float(returns.mean()), **metrics}
                if step % t.val_every == 0 or step in save_steps:
                    val_mean, val_std = self._validate(env, agent)
                    last_val = val_mean
                    self.registry.record_validation(run_id, step, val_mean, val_std, t.val_episodes)
                    row["val_return"] = val_mean
                    if step in save_steps:
                        self._save(run_id, step, agent, replay, {"mean": val_mean, "std": val_std, "episodes": t.val_episodes})
                log.writerow(row)
                self.reporter.advance(step, float(returns.mean()), last_val, updates_per_s)
        except BaseException as exc:
            self._close_log()
            self.reporter.stop()
            self.registry.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self._close_log()
        self.reporter.stop()
        result = TrainResult(run_id=run_id)
        result.tests = self._test_checkpoints(run_id, env, agent)
        self.registry.finish_run(run_id, status="finished")
        result.checkpoints = self.registry.list_checkpoints(run_id=run_id)
        return result

    # ------------------------------------------------------------------ pieces
    def _validate(self, env: TopicRec, agent: Agent) -> tuple[float, float]:
        t = self.config.training
        return _evaluate(env, agent, t.val_episodes, t.val_seed, self.fabric.device)

    def _save(self, run_id: int, step: int, agent: Agent, replay: EpisodeReplay, val: dict[str, float]) -> None:
        # Resume state first, checkpoint second: a kill in between leaves a resume state whose checkpoint
        # `--resume` registers, never a checkpoint that cannot be resumed from.
        state = {
            "step": step,
            "agent": _cpu(agent.state_dict()),
            "optimizers": {name: opt.state_dict() for name, opt in agent.optimizers().items()},
            "replay": replay.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "val": val,
        }
        self.registry.register_artifact(RESUME_KIND, self.config.env, state, run_id=run_id,
                                        config={"run_id": run_id, "step": step})
        self._register_checkpoint(run_id, step, agent, val)

    def _register_checkpoint(self, run_id: int, step: int, agent: Agent | dict, val: dict[str, float]) -> Checkpoint:
        state = agent.state_dict() if isinstance(agent, torch.nn.Module) else agent
        H = load_env_config(self.config.env).episode_length
        return self.registry.register_checkpoint(
            run_id, step, _cpu(state), val_return_mean=float(val["mean"]), val_return_std=float(val["std"]),
            val_episodes=int(val["episodes"]), episodes=step, env_steps=step * H)

    def _test_checkpoints(self, run_id: int, env: TopicRec, agent: Agent) -> list[TestResult]:
        t = self.config.training
        results = []
        for checkpoint in self.registry.list_checkpoints(run_id=run_id):
            agent.load_state_dict(self.registry.load_checkpoint_state(checkpoint.id))
            agent.to(self.fabric.device)
            mean, std = _evaluate(env, agent, t.test_episodes, t.test_seed, self.fabric.device)
            self.registry.record_test_return(checkpoint.id, mean, std, t.test_episodes)
            results.append(TestResult(checkpoint.id, checkpoint.step, bool(checkpoint.is_best),
                                      float(checkpoint.val_return_mean), mean, std, t.test_episodes))
        return results

    def _open_log(self, run_id: int, append: bool):
        self._log_file = None
        if self.logs_dir is None:
            return _NullWriter()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        path = self.logs_dir / f"run-{run_id}.csv"
        self._log_file = path.open("a" if append else "w", newline="")
        self._tensorboard = _tensorboard_writer(self.logs_dir / "tensorboard" / f"run-{run_id}")
        return _CsvLog(self._log_file, write_header=not append or path.stat().st_size == 0, tensorboard=self._tensorboard)

    def _close_log(self) -> None:
        if getattr(self, "_log_file", None) is not None:
            self._log_file.close()
            self._log_file = None
        if getattr(self, "_tensorboard", None) is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _evaluate(env: TopicRec, agent: Agent, episodes: int, seed: int, device) -> tuple[float, float]:
    agent.eval()
    batch = play_episodes(env, agent, torch.arange(episodes), seed, "greedy", device)
    agent.train()
    returns = batch.rewards.sum(dim=1).double()
    return float(returns.mean()), float(returns.std()) if episodes > 1 else 0.0


def _should_update(agent: Agent, step: int, random_steps: int) -> bool:
    return step >= random_steps or agent.updates_during_random_phase


def _select(batch, i: int):
    return type(batch)(**{f: getattr(batch, f)[i : i + 1] for f in batch.__dataclass_fields__})


def _cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().to("cpu") if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


class _NullWriter:
    def writerow(self, row: dict[str, Any]) -> None:
        pass


def _tensorboard_writer(folder: Path):
    """A TensorBoard writer when the `tensorboard` package is installed; None otherwise (CSV only)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class _CsvLog:
    """Metrics per logged step, in a CSV with fixed columns (and TensorBoard scalars when available)."""

    COLUMNS = ["step", "episode_return", "val_return", "critic_loss", "actor_loss", "alpha", "loss"]

    def __init__(self, handle, write_header: bool, tensorboard=None):
        self.writer = csv.DictWriter(handle, fieldnames=self.COLUMNS, extrasaction="ignore")
        self.handle = handle
        self.tensorboard = tensorboard
        if write_header:
            self.writer.writeheader()

    def writerow(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()})
        self.handle.flush()
        if self.tensorboard is not None:
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tensorboard.add_scalar(name, value, global_step=int(row["step"]))
