"""From a `slatectl train` request to the `Trainer`: `--env all --jobs K` (runs side by side), a population
(`--seeds N` or `--env E1,E2,…`: its members in lockstep in one process, one group), and `--resume`.

Every run's config is resolved (and so validated) before the first one starts, so a bad key or
environment fails before any work. With `jobs` > 1 the runs go to worker processes, each with `slatectl
--threads` torch threads, by default its share of the cores (slatectl/threads.py), so K runs do not
oversubscribe the cores; each reports with plain progress lines labelled by agent/env.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from slatectl.agents import agent_spec
from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.config import RunConfig, resolve_run_config
from slatectl.train.loop import TrainResult, Trainer
from slatectl.threads import configure_torch_threads
from slatectl.train.population import new_group_id, population_configs
from slatectl.train.progress import PlainReporter, TrainingReporter


def resolve_run_configs(agent: str, envs: Sequence[str], config_file: Path | None = None,
                        overrides: list[str] | None = None,
                        cli_training: dict[str, Any] | None = None) -> list[RunConfig]:
    """One resolved config per environment of `--env` (parsed by `sim.config.select_envs`); BadInput before any work."""
    agent_spec(agent, trainable=True)
    return [resolve_run_config(agent, name, config_file, overrides, cli_training) for name in envs]


def logs_dir(settings: Settings) -> Path:
    return settings.home / "logs"


def train_one(settings: Settings, config: RunConfig, command: str, reporter: TrainingReporter | None) -> TrainResult:
    with open_registry(settings) as registry:
        (result,) = Trainer(registry, config, reporter, logs_dir=logs_dir(settings)).run(command=command)
        return result


def train_runs(settings: Settings, configs: list[RunConfig], command: str, jobs: int = 1,
               reporter_for: Callable[[str], TrainingReporter] | None = None) -> Iterator[TrainResult]:
    """Train every config, `jobs` at a time; yields each result in the order of `configs`."""
    if jobs < 1:
        raise BadInput(f"--jobs must be >= 1 (got {jobs}).")
    label = lambda c: f"{c.agent_name}/{c.env}"  # noqa: E731
    if jobs == 1 or len(configs) == 1:
        configure_torch_threads(settings.threads)
        for config in configs:
            yield train_one(settings, config, command, reporter_for(label(config)) if reporter_for else None)
        return
    concurrent = min(jobs, len(configs))  # the cores are shared by the jobs that actually run at once
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_train_in_worker, settings, config, command, concurrent, label(config))
                   for config in configs]
        for future in futures:
            yield future.result()


def _train_in_worker(settings: Settings, config: RunConfig, command: str, jobs: int, label: str) -> TrainResult:
    configure_torch_threads(settings.threads, jobs)  # before any torch work in this process
    return train_one(settings, config, command, PlainReporter(label))


def train_population(settings: Settings, agent: str, envs: Sequence[str], seeds: int, config_file: Path | None,
                     overrides: list[str], cli_training: dict[str, Any], command: str,
                     reporter: TrainingReporter) -> list[TrainResult]:
    """Every env × seeds S, S+1, …, S+N−1 (S = the configured training seed), env-major, as one group."""
    if seeds < 1:
        raise BadInput(f"--seeds must be >= 1 (got {seeds}).")
    base = resolve_run_configs(agent, envs, config_file, overrides, cli_training)
    first_seed = base[0].training.seed
    configs = population_configs(base, list(range(first_seed, first_seed + seeds)))
    with open_registry(settings) as registry:
        reporter.message(f"training a stacked population of {len(configs)} runs in lockstep in this process.")
        return Trainer(registry, configs, reporter, logs_dir(settings)).run(command, new_group_id())


def resume_training(settings: Settings, target: int | str, reporter: TrainingReporter) -> list[TrainResult]:
    """Continue run `target` (an id), or every member of population `target` (a group id)."""
    with open_registry(settings) as registry:
        return Trainer.resume(registry, target, reporter, logs_dir=logs_dir(settings))
