"""`slatectl train AGENT --env E1,E2,…|all --seeds N` and `--resume GROUP`: a population from one request.

Member seeds are S, S+1, …, S+N−1 with S = --seed (default: the configured training seed), the same for
every env; members are ordered env-major. They train in one process in lockstep (`Trainer`), as one group,
so `--resume GROUP` continues all of them. Every member's config is resolved (and so validated) before any
work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from slatectl.agents import agent_spec
from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer, TrainResult
from slatectl.train.orchestration import logs_dir
from slatectl.train.population import new_group_id, population_configs
from slatectl.train.progress import TrainingReporter


def train_population(settings: Settings, agent: str, envs: Sequence[str], seeds: int, config_file: Path | None,
                     overrides: list[str], cli_training: dict[str, Any], command: str,
                     reporter: TrainingReporter) -> list[TrainResult]:
    agent_spec(agent, trainable=True)
    if seeds < 1:
        raise BadInput(f"--seeds must be >= 1 (got {seeds}).")
    base = [resolve_run_config(agent, name, config_file, overrides, cli_training) for name in envs]
    first_seed = base[0].training.seed
    configs = population_configs(base, list(range(first_seed, first_seed + seeds)))
    with open_registry(settings) as registry:
        reporter.message(f"training a stacked population of {len(configs)} runs in lockstep in this process.")
        return Trainer(registry, configs, reporter, logs_dir=logs_dir(settings)).run(command=command, group=new_group_id())


def resume_population(settings: Settings, group: str, reporter: TrainingReporter) -> list[TrainResult]:
    with open_registry(settings) as registry:
        return Trainer.resume_group(registry, group, reporter, logs_dir=logs_dir(settings))
