"""The resolved configuration of one training run: defaults from configs/, then --config, then --set.

Sections (and `--set` prefixes): `training.*` (the loop, configs/training.yaml), `agent.*` (the agent's
hyper-parameters, configs/agents/<agent>.yaml), `logged.*`, `gems.*`, `mf.*` (pretraining inputs,
configs/pretrain.yaml and the pretraining modules' defaults). The resolved config is stored with the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slatectl.agents import AGENTS, agent_spec
from slatectl.config_tools import apply_overrides, build_config, check_params, load_yaml_file, merge
from slatectl.domain import DeviceChoice
from slatectl.errors import BadInput
from slatectl.harness import PRECISIONS
from slatectl.pretrain.gems_train import GeMSConfig
from slatectl.pretrain.logged import LoggedDataConfig
from slatectl.pretrain.mf import MFConfig
from slatectl.sim.config import load_env_config
from slatectl.sim.seeds import TEST_SEED, VALIDATION_SEED

MF_SEED = 2022  # reference train_MF seed
SECTIONS = ("training", "agent", "logged", "gems", "mf")  # of a run's config, in this order


@dataclass(frozen=True)
class TrainingConfig:
    max_steps: int = 100_000
    random_steps: int = 2000
    val_every: int = 1000
    val_episodes: int = 200
    test_episodes: int = 500
    seed: int = 58407201
    save_every: int = 0
    parallel_episodes: int = 1
    random_phase_batch: int = 200
    val_seed: int = VALIDATION_SEED
    test_seed: int = TEST_SEED
    device: DeviceChoice = DeviceChoice.AUTO  # a run records the device it resolved to (cpu or cuda)
    precision: str = "32"  # 32 | bf16-mixed (--precision): the agent's updates under Lightning Fabric (harness.py)
    keep_resume: int = 1  # resume states kept per run (--keep-resume)

    def validate(self) -> None:
        flags = {"max_steps": " (--steps)", "keep_resume": " (--keep-resume)", "save_every": " (--save-every)"}
        minimum = {**dict.fromkeys(("max_steps", "val_every", "val_episodes", "test_episodes", "parallel_episodes",
                                    "random_phase_batch", "keep_resume"), 1), "random_steps": 0, "save_every": 0}
        check_params("training", [
            *((getattr(self, name) >= low, f"training.{name}{flags.get(name, '')} must be >= {low} (got "
               f"{getattr(self, name)})") for name, low in minimum.items()),
            (self.precision in PRECISIONS,
             f"training.precision (--precision) must be one of {', '.join(PRECISIONS)} (got {self.precision!r})"),
            # Lightning's seed_everything seeds numpy, which takes 32-bit seeds.
            (0 <= self.seed < 2**32, f"training.seed (--seed) must lie in [0, 2^32) (got {self.seed})"),
            (len({self.seed, self.val_seed, self.test_seed}) == 3,
             "training.seed, training.val_seed and training.test_seed must differ (validation and test users are "
             "distinct from training users)"),
        ])

    def untrained_warning(self, updates_during_random_phase: bool = False) -> str | None:
        """A warning when every step falls in the random phase (so every checkpoint is untrained)."""
        if updates_during_random_phase or self.max_steps > self.random_steps:
            return None
        return (f"warning: {self.max_steps:,} steps is not more than the random phase ({self.random_steps:,} steps): "
                "the agent is never updated and every checkpoint is untrained; use more --steps or lower "
                "training.random_steps.")

    def save_steps(self) -> list[int]:
        """Steps at which a checkpoint is saved: N, 2N, … and always the final step."""
        steps = list(range(self.save_every, self.max_steps + 1, self.save_every)) if self.save_every else []
        return sorted(set(steps) | {self.max_steps})


@dataclass(frozen=True)
class RunConfig:
    agent_name: str
    env: str
    training: TrainingConfig
    agent: Any  # the agent's params dataclass (AGENTS[agent_name].params_cls)
    logged: LoggedDataConfig = field(default_factory=LoggedDataConfig)
    gems: GeMSConfig = field(default_factory=GeMSConfig)
    mf: MFConfig = field(default_factory=MFConfig)

    @property
    def spec(self):
        return AGENTS[self.agent_name]

    def to_dict(self) -> dict[str, Any]:
        return {"agent_name": self.agent_name, "env": self.env,
                **{name: asdict(getattr(self, name)) for name in SECTIONS}}


def _configs_file(*parts: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files("slatectl.configs").joinpath(*parts).read_text()) or {}


def pretrain_defaults() -> dict[str, dict[str, Any]]:
    """The `logged`, `gems` and `mf` sections of configs/pretrain.yaml."""
    pretrain = _configs_file("pretrain.yaml")
    return {name: pretrain.get(name, {}) for name in ("logged", "gems", "mf")}


def default_config_dict(agent_name: str) -> dict[str, Any]:
    agent_spec(agent_name)  # unknown name → BadInput listing the agents
    return {"training": _configs_file("training.yaml"), "agent": _configs_file("agents", f"{agent_name}.yaml"),
            **pretrain_defaults()}


def resolve_run_config(agent_name: str, env: str, config_file: Path | None = None, overrides: list[str] | None = None,
                       cli_training: dict[str, Any] | None = None) -> RunConfig:
    """Defaults ← --config FILE ← --set key=value ← explicit CLI flags (--steps, --save-every, --seed, --device)."""
    load_env_config(env)  # unknown env → BadInput now, not after building inputs
    data = default_config_dict(agent_name)
    if config_file is not None:
        data = merge(data, load_yaml_file(config_file))
    data = apply_overrides(data, overrides or [])
    for key, value in (cli_training or {}).items():
        if value is not None:
            data.setdefault("training", {})[key] = value
    if unknown := sorted(set(data) - set(SECTIONS)):
        raise BadInput(f"unknown config section(s) {', '.join(unknown)}. Sections: {', '.join(SECTIONS)}.")
    return run_config_from_dict({"agent_name": agent_name, "env": env, **data})


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a stored resolved config (for --resume and collection); keys other than the config's
    sections (the run's recorded `runtime`) are ignored. Keys added since the run was recorded take
    their defaults. Each section is built into its typed config and validated (`build_config`)."""
    classes = {"training": TrainingConfig, "agent": AGENTS[data["agent_name"]].params_cls,
               "logged": LoggedDataConfig, "gems": GeMSConfig, "mf": MFConfig}
    return RunConfig(data["agent_name"], data["env"],
                     **{name: build_config(classes[name], data[name], f"{name}.") for name in SECTIONS})
