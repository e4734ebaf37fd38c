"""`slatectl train AGENT --env E1,E2|all --seeds N`: the K = envs × N runs as one population (issue 11).

Member seeds are S, S+1, …, S+N−1 with S = --seed (default: the configured training seed), the same
for every env; members are ordered env-major. Stacked agents (SAC+GeMS, SAC+TopK) train in one process in lockstep
(`PopulationTrainer`); other agents train their members one after another with a message saying so
(still one group, so `--resume GROUP` works for them too).
"""

from __future__ import annotations

from pathlib import Path

from slatectl.cli.common import err_console
from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.sim.config import env_names
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import TrainResult
from slatectl.train.population import (PopulationTrainer, population_configs, population_supported,
                                       train_members_sequentially)


def parse_envs(env: str) -> list[str]:
    """`all` or a comma-separated list of distinct environment names."""
    envs = env_names() if env == "all" else [e.strip() for e in env.split(",") if e.strip()]
    if not envs or len(set(envs)) != len(envs):
        raise BadInput(f"--env must be `all` or a comma-separated list of distinct environments (got {env!r}).")
    return envs


def train_population(settings: Settings, agent: str, envs: list[str], seeds: int, config_file: Path | None,
                     overrides: list[str], cli_training: dict, command: str, reporter) -> list[TrainResult]:
    if seeds < 1:
        raise BadInput(f"--seeds must be >= 1 (got {seeds}).")
    base = [resolve_run_config(agent, name, config_file, overrides, cli_training) for name in envs]
    first_seed = base[0].training.seed
    configs = population_configs(base, list(range(first_seed, first_seed + seeds)))
    with open_registry(settings) as registry:
        if population_supported(agent):
            trainer = PopulationTrainer(registry, configs, reporter, logs_dir=settings.home / "logs")
            return trainer.run(command=command)
        err_console.print(f"{agent} cannot train as a stacked population yet (only SAC+GeMS and SAC+TopK can): training its "
                          f"{len(configs)} runs one after another in this process.")
        return train_members_sequentially(registry, configs, reporter, settings.home / "logs", command)


def resume_population(settings: Settings, group: str, reporter) -> list[TrainResult]:
    with open_registry(settings) as registry:
        return PopulationTrainer.resume(registry, group, reporter, logs_dir=settings.home / "logs")
