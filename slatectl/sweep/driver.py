"""Create, run and resume a sweep. The driver only places tasks and records the sweep's state: all the
training state lives in the registry (tasks, runs, checkpoints, resume states), so a new driver
(`sweep resume ID`) picks up whatever a dead one left unfinished."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from slatectl.collect.collector import CollectRequest, collect_dataset
from slatectl.collect.random_return import compute_random_return
from slatectl.domain import PROMOTABLE_QUALITIES
from slatectl.errors import JobFailed
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.sweep.executors import ExecutorOptions, make_executor
from slatectl.sweep.spec import SweepSpec, parse_spec
from slatectl.sweep.tasks import expand

Say = Callable[[str], None]


@dataclass(frozen=True)
class SweepResult:
    sweep_id: int
    finished: int
    failed: dict[int, str]  # task position → error


def create_sweep(settings: Settings, spec: SweepSpec, executor: str) -> int:
    """Record the sweep and its tasks (all `pending`); returns the sweep id."""
    plans = expand(spec)
    with open_registry(settings) as registry:
        return registry.create_sweep(spec.to_dict(), [p.to_row() for p in plans], executor).id


def run_sweep(settings: Settings, spec: SweepSpec, executor: str, options: ExecutorOptions,
              say: Say = print) -> SweepResult:
    """`sweep run`: check the executor, record the sweep, run every task."""
    runner = make_executor(executor, options)
    runner.prepare(settings)  # e.g. Ray refuses an SQLite registry on a multi-machine cluster: before any row
    sweep_id = create_sweep(settings, spec, executor)
    say(f"sweep {sweep_id}: {len(expand(spec))} task(s); watch it with `slatectl sweep status {sweep_id}`")
    return _execute(settings, sweep_id, spec, runner, say)


def resume_sweep(settings: Settings, sweep_id: int, executor: str, options: ExecutorOptions,
                 say: Say = print) -> SweepResult:
    """`sweep resume ID`: run every task of the sweep that has not finished (each resumes its runs)."""
    with open_registry(settings) as registry:
        spec = parse_spec(registry.get_sweep(sweep_id).spec, f"sweep {sweep_id}'s stored spec")
    runner = make_executor(executor, options)
    runner.prepare(settings)
    return _execute(settings, sweep_id, spec, runner, say)


def _execute(settings: Settings, sweep_id: int, spec: SweepSpec, runner, say: Say) -> SweepResult:
    with open_registry(settings) as registry:
        tasks = registry.sweep_tasks(sweep_id)
        todo = [t for t in tasks if t.state != "finished"]
        registry.set_sweep_state(sweep_id, "running")
    if todo:
        say(f"sweep {sweep_id}: {len(todo)} of {len(tasks)} task(s) to run")
        runner.run(settings, [t.id for t in todo], spec, say)
    with open_registry(settings) as registry:
        tasks = registry.sweep_tasks(sweep_id)
        failed = {t.position: t.error or t.state for t in tasks if t.state != "finished"}
        if failed:
            registry.set_sweep_state(sweep_id, "failed", error=f"{len(failed)} task(s) did not finish")
            details = "; ".join(f"task {position}: {error}" for position, error in sorted(failed.items()))
            raise JobFailed(f"sweep {sweep_id}: {len(failed)} of {len(tasks)} task(s) did not finish ({details}). "
                            f"Everything registered is kept; continue with `slatectl sweep resume {sweep_id}`.")
        if spec.collect is not None:
            _collect(registry, sweep_id, spec, say)
        registry.set_sweep_state(sweep_id, "finished")
    return SweepResult(sweep_id, len(tasks), {})


def _collect(registry, sweep_id: int, spec: SweepSpec, say: Say) -> None:
    """The spec's collection: per env and quality, promote by the `ckpt promote` rule among the collect
    agent's checkpoints, then collect a dataset with it — skipped when that checkpoint already has a
    dataset of that size and seed (a resumed sweep does not collect twice)."""
    collect = spec.collect
    for env in spec.envs:
        for quality in collect.qualities:
            suggestion = registry.suggest_checkpoint(env, quality, agent=collect.agent,
                                                     compute_random=compute_random_return)
            chosen = suggestion.suggested
            others = [q for q in PROMOTABLE_QUALITIES if q != quality and
                      getattr(registry.active_promotion(env, q), "checkpoint_id", None) == chosen.id]
            if others and not collect.allow_same:
                say(f"sweep {sweep_id}: {env}/{quality} not collected: the rule chose checkpoint {chosen.id}, already "
                    f"promoted as {others[0]} (set collect.allow_same: true to collect both from it)")
                continue
            active = registry.active_promotion(env, quality)
            if active is None or active.checkpoint_id != chosen.id:
                registry.promote_checkpoint(env, quality, chosen.id, note=f"sweep {sweep_id}: {suggestion.rule}",
                                            allow_same=collect.allow_same)
            done = [d for d in registry.list_datasets(env=env, quality=quality)
                    if d.checkpoint_id == chosen.id and d.episodes == collect.episodes and d.seed == collect.seed]
            if done:
                say(f"sweep {sweep_id}: {env}/{quality} already collected (dataset {done[0].id})")
                continue
            dataset = collect_dataset(registry, CollectRequest(env, quality, collect.episodes, collect.seed,
                                                               act=collect.act, encoder=collect.encoder))
            say(f"sweep {sweep_id}: dataset {dataset.id}: {env}/{quality} from checkpoint {chosen.id}, "
                f"{dataset.episodes:,} episodes, mean return {dataset.return_mean:.2f}")
