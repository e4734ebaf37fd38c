"""Shared CLI plumbing: consoles, the resolved settings, JSON output, option ranges, number formatting.

Kept free of torch and of the registry so every command module (and `slatectl --help`) can import it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from slatectl.configs import ALL_ENVS, env_names
from slatectl.domain import DeviceChoice
from slatectl.settings import Settings

console = Console()
err_console = Console(stderr=True)

_settings: Settings | None = None

# Ranges of numeric options, checked by the option parser (exit 2, before any work or registry write).
# Seeds are stored as signed 64-bit integers and fed to torch/numpy generators: [0, 2^63).
SEED_MAX = 2**63 - 1
TRAIN_SEED_MAX = 2**32 - 1  # training seeds also seed numpy through Lightning, which takes 32 bits
MAX_EPISODES = 10_000_000  # 1e9 transitions of 100 steps: far beyond a day of collection on one machine
MAX_STEPS = 100_000_000  # training steps (1,000x the default budget)
MAX_BATCH = 1_000_000  # users simulated at once; memory grows linearly with it
MAX_JOBS = 64
MAX_SEEDS = 1_000  # seeds per environment in one population (memory grows linearly with it)
MAX_LIST = 100_000  # rows listed by an overview

SEED_RANGE = {"min": 0, "max": SEED_MAX}
TRAIN_SEED_RANGE = {"min": 0, "max": TRAIN_SEED_MAX}
EPISODES_RANGE = {"min": 1, "max": MAX_EPISODES}
STEPS_RANGE = {"min": 1, "max": MAX_STEPS}
BATCH_RANGE = {"min": 1, "max": MAX_BATCH}
JOBS_RANGE = {"min": 1, "max": MAX_JOBS}
SEEDS_RANGE = {"min": 1, "max": MAX_SEEDS}
PROBABILITY_RANGE = {"min": 0.0, "max": 1.0}  # NaN and ±inf fail this check too


Device = DeviceChoice  # --device's choices, from the one definition
DEVICE_HELP = "auto | cpu | cuda; auto takes CUDA when a GPU is visible, cuda without one exits 2."


def set_settings(settings: Settings) -> None:
    global _settings
    _settings = settings


def get_settings() -> Settings:
    return _settings if _settings is not None else Settings.resolve()


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else (for scripts)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


# Shell completion (`slatectl --install-completion`) of environment names, read from the shipped configs
# (no simulator import, so completing stays instant).
def complete_env(incomplete: str) -> list[str]:
    """Env names starting with what was typed (options that take exactly one env)."""
    return [name for name in env_names() if name.startswith(incomplete)]


def complete_envs(incomplete: str) -> list[str]:
    """Env names, `all`, or the next name of a comma-separated list (options that take several envs)."""
    done, _, last = incomplete.rpartition(",")
    if done:
        chosen = done.split(",")
        return [f"{done},{name}" for name in env_names() if name.startswith(last) and name not in chosen]
    return [name for name in [*env_names(), ALL_ENVS] if name.startswith(incomplete)]
