"""Population training: K runs of one agent (envs × seeds) trained in one process, in lockstep.

Each member is an ordinary run in the registry (its own seed, env, config, validations, checkpoints at
exactly the requested steps, resume states) whose config carries `population = {group, member, size}`;
the group id ties the members together for `--resume GROUP`. At every step every member plays its own
training episode(s) (its own users: its env, its seed) and makes its own update on a batch of its own
replay, as `Trainer` does for a solo run; the members' weights are stacked so one batched kernel serves
all of them (`StackedSAC`, docs/population.md). Member k reproduces the solo run with the same env
and seed: same initial weights (built after the same `seed_everything`), same episodes, same replay
indices and noise (its own generator continues the solo run's global RNG stream), same update — up to
float rounding of batched vs unbatched kernels.

SAC+GeMS and SAC+TopK (ideal, MF) are stacked so far; `population_supported(agent)` says whether an agent
is; the others' members train one after another as solo runs (`train_members_sequentially`), still
registered as a group.
"""

from __future__ import annotations

import shlex
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from lightning_fabric import Fabric

from slatectl.agents.base import ActMode, EpisodeBatch
from slatectl.agents.sac import SACAgent
from slatectl.agents.sac_population import StackedSAC
from slatectl.errors import BadInput
from slatectl.registry import Registry
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec
from slatectl.train.config import RunConfig, run_config_from_dict
from slatectl.train.loop import (RESUME_KIND, SilentReporter, TestResult, Trainer, TrainingReporter, TrainResult,
                                 _build_agent, _CsvLog, _resume_states, _should_update, _tensorboard_writer)
from slatectl.train.replay import EpisodeReplay

#: Agents whose members are stacked into one model; the others train their members one after another.
STACKED_AGENTS = ("sac-gems", "sac-topk-ideal", "sac-topk-mf")


def population_supported(agent_name: str) -> bool:
    return agent_name in STACKED_AGENTS


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
    pairs = [(c.env, c.training.seed) for c in configs]
    if len(set(pairs)) != len(pairs):
        raise BadInput("two members of the population have the same env and seed; give distinct seeds.")


def new_group_id() -> str:
    return f"pop-{uuid.uuid4().hex[:12]}"


def member_run_config(config: RunConfig, group: str, member: int, size: int) -> dict:
    """The run config stored for a member: the resolved config plus its place in the group."""
    return {**config.to_dict(), "population": {"group": group, "member": member, "size": size}}


def group_runs(registry: Registry, group: str) -> list:
    """The member runs of a group, in member order."""
    runs = [r for r in registry.list_runs() if (r.config.get("population") or {}).get("group") == group]
    return sorted(runs, key=lambda r: r.config["population"]["member"])


def train_members_sequentially(registry: Registry, configs: list[RunConfig], reporter: TrainingReporter | None = None,
                               logs_dir: Path | None = None, command: str | None = None,
                               group: str | None = None) -> list[TrainResult]:
    """The fallback for agents that are not stacked: the members as solo runs one after another, each run
    exactly as `Trainer.run` (same seeding), all registered up front with the group id so `--resume GROUP`
    finds every member even if the process dies during the first one."""
    check_population(configs)
    group = group or new_group_id()
    prepared = []
    for k, cfg in enumerate(configs):
        trainer = Trainer(registry, cfg, reporter, logs_dir)
        trainer.fabric.seed_everything(cfg.training.seed, verbose=False)
        setup = _build_agent(registry, cfg, trainer.reporter)
        run = registry.start_run(cfg.agent_name, cfg.env, cfg.training.seed, member_run_config(cfg, group, k, len(configs)),
                                 command=command or shlex.join(sys.argv), inputs=setup.input_ids)
        prepared.append((trainer, setup, run.id, torch.get_rng_state()))
    results = []
    for trainer, setup, run_id, rng_state in prepared:
        torch.set_rng_state(rng_state)  # the state this member's solo run would act with
        replay = EpisodeReplay(trainer.config.agent.capacity, trainer.config.agent.batch_size)
        results.append(trainer._train(run_id, setup, replay, first_step=0))
    return results


@dataclass
class Member:
    config: RunConfig
    env: TopicRec
    agent: SACAgent  # layout of the member's weights (the trained values live in the stacked agent)
    input_ids: list[int]
    generator: torch.Generator  # continues the solo run's global RNG stream after agent construction
    replay: EpisodeReplay
    run_id: int = -1
    recorded_validations: set[int] = field(default_factory=set)
    recorded_checkpoints: set[int] = field(default_factory=set)


@torch.no_grad()
def play_member_episodes(envs: MemberEnvs, agent: StackedSAC, user_ids: torch.Tensor, seeds: list[int],
                         mode: ActMode, generators: list[torch.Generator]) -> EpisodeBatch:
    """`play_episodes` for a population: member k plays users `user_ids` of its env with seed `seeds[k]`.

    Returns an `EpisodeBatch` whose fields have a leading member dimension (K, B, …), on CPU.
    """
    cfg = envs.config
    K, B, H, S = envs.members, user_ids.shape[0], cfg.episode_length, cfg.slate_size
    slates = torch.empty(K, B, H + 1, S, dtype=torch.int64)
    clicks = torch.empty(K, B, H + 1, S, dtype=torch.float32)
    actions = torch.zeros(K, B, H, agent.action_dim, dtype=torch.float32)
    rewards = torch.empty(K, B, H, dtype=torch.float32)
    user_states = torch.empty(K, B, H + 1, cfg.embedding_dim, dtype=torch.float32)
    device = agent.device
    first = envs.reset(user_ids, seeds)
    slates[:, :, 0], clicks[:, :, 0], user_states[:, :, 0] = first.slate, first.clicks, envs.user_states()
    agent.begin_episodes(first.slate.to(device), first.clicks.to(device))
    for t in range(H):
        slate, action = agent.act(mode, generators)
        result = envs.step(slate.to("cpu"))
        obs = result.observation
        agent.observe(obs.slate.to(device), obs.clicks.to(device))
        slates[:, :, t + 1], clicks[:, :, t + 1] = obs.slate, obs.clicks
        actions[:, :, t] = action.to("cpu")
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
                           f"(stacked: {', '.join(STACKED_AGENTS)}); train its members one after another.")
        self.registry = registry
        self.configs = configs
        self.training = configs[0].training
        self.reporter = reporter or SilentReporter()
        self.logs_dir = logs_dir
        self.fabric = Fabric(accelerator=self.training.device, devices=1, precision="32-true")
        if self.training.device == "cuda" and not torch.cuda.is_available():
            raise BadInput("--device cuda was asked for but no CUDA device is available; use --device cpu.")

    # ------------------------------------------------------------------ entry points
    def build_members(self) -> list[Member]:
        """Each member built exactly as a solo run builds its agent: seed_everything(seed), then the agent
        (pretrained inputs are found or built with forked RNG state, so they do not shift the stream)."""
        members: list[Member] = []
        shared_envs: dict[str, TopicRec] = {}
        for cfg in self.configs:
            self.fabric.seed_everything(cfg.training.seed, verbose=False)
            setup = _build_agent(self.registry, cfg, self.reporter)
            generator = torch.Generator()
            generator.set_state(torch.get_rng_state())
            env = shared_envs.setdefault(cfg.env, setup.env)
            members.append(Member(cfg, env, setup.agent, setup.input_ids, generator,
                                  EpisodeReplay(cfg.agent.capacity, cfg.agent.batch_size)))
        return members

    def run(self, command: str | None = None, group: str | None = None) -> list[TrainResult]:
        members = self.build_members()
        group = group or new_group_id()
        for k, m in enumerate(members):
            config = member_run_config(m.config, group, k, len(members))
            run = self.registry.start_run(m.config.agent_name, m.config.env, m.config.training.seed, config,
                                          command=command or shlex.join(sys.argv), inputs=m.input_ids)
            m.run_id = run.id
        self.group = group
        self.reporter.message(f"population {group}: {len(members)} runs of {self.configs[0].agent_name} "
                              f"(runs {members[0].run_id}–{members[-1].run_id}), {self.training.max_steps:,} steps each")
        return self._train(members, StackedSAC([m.agent for m in members]), first_step=0)

    group_runs = staticmethod(group_runs)

    @classmethod
    def resume(cls, registry: Registry, group: str, reporter: TrainingReporter | None = None,
               logs_dir: Path | None = None) -> list[TrainResult]:
        """Resume every member of `group` (stacked agents in lockstep; others one after another)."""
        runs = group_runs(registry, group)
        if not runs:
            raise BadInput(f"no population {group!r} in the registry (the group id is in `slatectl inspect run`'s config).")
        if len(runs) != runs[0].config["population"]["size"]:
            raise BadInput(f"population {group} should have {runs[0].config['population']['size']} runs; "
                           f"the registry has {len(runs)}.")
        if not population_supported(runs[0].agent):
            return [Trainer.resume(registry, r.id, reporter, logs_dir) if r.status != "finished"
                    else TrainResult(run_id=r.id, checkpoints=registry.list_checkpoints(run_id=r.id)) for r in runs]
        trainer = cls(registry, [run_config_from_dict(r.config) for r in runs], reporter, logs_dir)
        trainer.group = group
        return trainer._resume(runs)

    def _resume(self, runs) -> list[TrainResult]:
        members = self.build_members()
        for m, run in zip(members, runs):
            m.run_id = run.id
            m.recorded_validations = {v.step for v in self.registry.validations(run.id)}
            m.recorded_checkpoints = {c.step for c in self.registry.list_checkpoints(run_id=run.id)}
        agent = StackedSAC([m.agent for m in members])
        states = [{a.config["step"]: a for a in _resume_states(self.registry, m.run_id, m.config.env)} for m in members]
        common = set.intersection(*(set(s) for s in states))
        if not common:
            if any(m.recorded_checkpoints for m in members):
                raise BadInput(f"population {self.group} has checkpoints but no resume state common to all members.")
            self.reporter.message(f"population {self.group} saved nothing yet: restarting it from step 0")
            return self._train(members, agent, first_step=0)
        step = max(common)
        optimizer_states = []
        for k, m in enumerate(members):
            state = self.registry.load_artifact_state(states[k][step].id)
            agent.load_member_state_dict(k, state["agent"])
            optimizer_states.append(state["optimizers"])
            m.replay.load_state_dict(state["replay"])
            m.generator.set_state(state["torch_rng"])
            if step not in m.recorded_checkpoints:
                self._register_checkpoint(m, step, agent.member_state_dict(k), state["val"])
        agent.to(self.fabric.device)
        agent.load_optimizer_states(optimizer_states)
        self.reporter.message(f"resuming population {self.group} ({len(members)} runs) at step {step:,}")
        return self._train(members, agent, first_step=step)

    # ------------------------------------------------------------------ the loop
    def _train(self, members: list[Member], agent: StackedSAC, first_step: int) -> list[TrainResult]:
        t = self.training
        agent.to(self.fabric.device)
        envs = MemberEnvs([m.env for m in members])
        seeds = [m.config.training.seed for m in members]
        generators = [m.generator for m in members]
        save_steps = set(t.save_steps())
        boundaries = sorted(save_steps | set(range(t.val_every, t.max_steps + 1, t.val_every)))
        logs = [self._open_log(m, append=first_step > 0) for m in members]
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
                episodes = play_member_episodes(envs, agent, torch.arange(step, step + count), seeds,
                                                "random" if random_phase else "explore", generators)
                returns = episodes.rewards.sum(dim=2).mean(dim=1)  # (K,)
                metrics: list[dict[str, float]] = [{} for _ in members]
                for i in range(count):
                    for k, m in enumerate(members):
                        m.replay.add(member_episodes(episodes, k, slice(i, i + 1)))
                    if _should_update(members[0].agent, step, t.random_steps) and members[0].replay.ready:
                        started = time.perf_counter()
                        batch = stack_batches([m.replay.sample(m.generator) for m in members])
                        metrics = agent.update(batch.to(self.fabric.device), generators, self.fabric.backward)
                        update_times.append(time.perf_counter() - started)
                    step += 1
                recent = update_times[-50:]
                updates_per_s = len(members) * len(recent) / max(sum(recent), 1e-9) if recent else 0.0
                rows = [{"step": step, "episode_return": float(returns[k]), **metrics[k]} for k in range(len(members))]
                if step % t.val_every == 0 or step in save_steps:
                    means, stds = self._evaluate(envs, agent, len(members), t.val_episodes, t.val_seed)
                    last_val = sum(means) / len(means)
                    self._report_validation(members, step, means)
                    for k, m in enumerate(members):
                        rows[k]["val_return"] = means[k]
                        val = {"mean": means[k], "std": stds[k], "episodes": t.val_episodes}
                        if step not in m.recorded_validations:
                            self.registry.record_validation(m.run_id, step, means[k], stds[k], t.val_episodes)
                        if step in save_steps:
                            self._save(m, k, agent, step, val)
                for log, row in zip(logs, rows):
                    log.writerow(row)
                self.reporter.advance(step, float(returns.mean()), last_val, updates_per_s)
        except BaseException as exc:
            self._close_logs()
            self.reporter.stop()
            for m in members:
                self.registry.finish_run(m.run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self._close_logs()
        self.reporter.stop()
        tests = self._test_checkpoints(members, envs, agent)
        results = []
        for k, m in enumerate(members):
            self.registry.finish_run(m.run_id, status="finished")
            results.append(TrainResult(run_id=m.run_id, checkpoints=self.registry.list_checkpoints(run_id=m.run_id),
                                       tests=tests[k]))
        return results

    # ------------------------------------------------------------------ pieces
    def _evaluate(self, envs: MemberEnvs, agent: StackedSAC, K: int, episodes: int,
                  seed: int) -> tuple[list[float], list[float]]:
        """Greedy returns of every member on the same fixed users (`seed`), as the solo `_evaluate`."""
        batch = play_member_episodes(envs, agent, torch.arange(episodes), [seed] * K, "greedy", [])
        returns = batch.rewards.sum(dim=2).double()  # (K, episodes)
        means = [float(r.mean()) for r in returns]
        stds = [float(r.std()) if episodes > 1 else 0.0 for r in returns]
        return means, stds

    def _report_validation(self, members: list[Member], step: int, means: list[float]) -> None:
        per_env: dict[str, list[float]] = {}
        for m, value in zip(members, means):
            per_env.setdefault(m.config.env, []).append(value)
        text = ", ".join(f"{env} {sum(v) / len(v):.2f}" for env, v in per_env.items())
        self.reporter.message(f"step {step:,}: mean validation return per env: {text}")

    def _save(self, m: Member, k: int, agent: StackedSAC, step: int, val: dict[str, float]) -> None:
        # As Trainer._save: resume state first (an ordinary solo resume state of the member's run), then
        # the checkpoint, so a kill in between leaves something `--resume` completes.
        weights = agent.member_state_dict(k)
        state = {"step": step, "agent": weights, "optimizers": agent.member_optimizer_states(k),
                 "replay": m.replay.state_dict(), "torch_rng": m.generator.get_state(), "val": val}
        self.registry.register_artifact(RESUME_KIND, m.config.env, state, run_id=m.run_id,
                                        config={"run_id": m.run_id, "step": step})
        if step not in m.recorded_checkpoints:
            self._register_checkpoint(m, step, weights, val)

    def _register_checkpoint(self, m: Member, step: int, weights: dict, val: dict[str, float]) -> None:
        H = m.env.config.episode_length
        self.registry.register_checkpoint(
            m.run_id, step, weights, val_return_mean=float(val["mean"]), val_return_std=float(val["std"]),
            val_episodes=int(val["episodes"]), episodes=step, env_steps=step * H)
        m.recorded_checkpoints.add(step)

    def _test_checkpoints(self, members: list[Member], envs: MemberEnvs, agent: StackedSAC) -> list[list[TestResult]]:
        """Every saved checkpoint on the fixed test users; members' checkpoints of one step run together."""
        t = self.training
        checkpoints = [{c.step: c for c in self.registry.list_checkpoints(run_id=m.run_id)} for m in members]
        steps = sorted(set.intersection(*(set(c) for c in checkpoints)))
        results: list[list[TestResult]] = [[] for _ in members]
        for step in steps:
            for k in range(len(members)):
                agent.load_member_state_dict(k, self.registry.load_checkpoint_state(checkpoints[k][step].id))
            means, stds = self._evaluate(envs, agent, len(members), t.test_episodes, t.test_seed)
            for k in range(len(members)):
                c = checkpoints[k][step]
                self.registry.record_test_return(c.id, means[k], stds[k], t.test_episodes)
                results[k].append(TestResult(c.id, step, bool(c.is_best), float(c.val_return_mean), means[k], stds[k],
                                             t.test_episodes))
        return results

    def _open_log(self, m: Member, append: bool):
        if self.logs_dir is None:
            return _NullLog()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        path = self.logs_dir / f"run-{m.run_id}.csv"
        handle = path.open("a" if append else "w", newline="")
        tensorboard = _tensorboard_writer(self.logs_dir / "tensorboard" / f"run-{m.run_id}")
        self._handles = [*getattr(self, "_handles", []), handle, tensorboard]
        return _CsvLog(handle, write_header=not append or path.stat().st_size == 0, tensorboard=tensorboard)

    def _close_logs(self) -> None:
        for handle in getattr(self, "_handles", []):
            if handle is not None:
                handle.close()
        self._handles = []


class _NullLog:
    def writerow(self, row) -> None:
        pass
