"""The sweep spec: a YAML mapping validated once into a `SweepSpec` by `build_config` (each value coerced to
its field's type, then the dataclasses' `validate`; BadInput, exit 2, on any problem).

    agents: [sac-gems, sac-topk-ideal]   # trainable agents
    envs: [focused_topdown] | all        # environments
    seeds: [1, 2]                        # training seeds
    steps: 300                           # training steps per run
    save_every: 150                      # checkpoint every N steps (and at the end)
    set: {training.random_steps: 100}    # overrides for every run (as `train --set`)
    sets: [{}, {agent.gamma: 0.9}]       # optional grid axis: one population per override set
    members_per_task: 4                  # runs per task (population); default: all envs × seeds
    resources: {num_cpus: 1, num_gpus: 0}   # per task, for Ray
    max_retries: 3                       # retries of a task whose worker died
    lease_timeout_s: 120                 # a worker silent this long is taken for dead
    collect: {qualities: [medium, expert], episodes: 10000, agent: sac-gems, seed: 0}   # optional, at the end
             # (also act: sample|greedy, encoder: ID|none, allow_same: false, as `collect` and `ckpt promote`)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from slatectl.agents import trainable_agents
from slatectl.collect.encoder import NO_ENCODER
from slatectl.config_tools import build_config, check_params, load_yaml_file
from slatectl.domain import PROMOTABLE_QUALITIES, BehaviourMode, Quality
from slatectl.errors import BadInput
from slatectl.sim.config import ALL_ENVS, env_names
from slatectl.train.config import resolve_run_config

REQUIRED = ("agents", "envs", "seeds", "steps")
MAX_STEPS = 100_000_000


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def validate(self) -> None:
        check_params("resources", [
            *((0 <= getattr(self, key) <= 1024, f"resources.{key} must be a number in [0, 1024] (got {getattr(self, key)!r})")
              for key in ("num_cpus", "num_gpus")),
            (self.num_cpus > 0 or self.num_gpus > 0,
             "a task needs some resource (resources.num_cpus or resources.num_gpus > 0)"),
        ])


@dataclass(frozen=True)
class CollectSpec:
    qualities: tuple[Quality, ...] = ()
    episodes: int = 10_000
    agent: str | None = None  # whose checkpoints are promoted; default: the sweep's first agent
    seed: int = 0
    act: BehaviourMode = BehaviourMode.SAMPLE  # collect --act
    encoder: int | str | None = None  # collect --encoder: a GeMS artifact id, NO_ENCODER, or the env's default
    allow_same: bool = False  # promote one checkpoint as both medium and expert (else that quality is skipped)

    def validate(self) -> None:
        check_params("collect", [
            (bool(self.qualities) and all(q in PROMOTABLE_QUALITIES for q in self.qualities)
             and len(set(self.qualities)) == len(self.qualities),
             f"collect.qualities must be distinct qualities among {', '.join(PROMOTABLE_QUALITIES)} "
             f"(got {[str(q) for q in self.qualities]!r})"),
            (1 <= self.episodes <= 10_000_000, f"collect.episodes must be an integer in [1, 10,000,000] (got {self.episodes!r})"),
            (self.encoder in (None, NO_ENCODER) or (isinstance(self.encoder, int) and self.encoder >= 0),
             f"collect.encoder must be a GeMS artifact id or {NO_ENCODER} (got {self.encoder!r})"),
        ])


@dataclass(frozen=True)
class SweepSpec:
    agents: tuple[str, ...]
    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    save_every: int = 0
    set: dict[str, Any] = field(default_factory=dict)
    sets: tuple[dict[str, Any], ...] = ({},)
    members_per_task: int | None = None
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 3
    lease_timeout_s: float = 120.0
    collect: CollectSpec | None = None

    def validate(self) -> None:
        trainable = trainable_agents()
        unknown_agents = [agent for agent in self.agents if agent and agent not in trainable]
        unknown_envs = [env for env in self.envs if env not in env_names()]
        collect_agent = None if self.collect is None else self.collect.agent
        check_params("sweep", [
            *((bool(names) and all(names), f"{key} must be a non-empty list of names (got {list(names)!r})")
              for key, names in (("agents", self.agents), ("envs", self.envs))),
            *((len(set(names)) == len(names), f"{key} lists a name twice ({list(names)!r})")
              for key, names in (("agents", self.agents), ("envs", self.envs))),
            (not unknown_agents, f"unknown agent(s) {', '.join(unknown_agents)} (trainable agents: {', '.join(trainable)})"),
            (not unknown_envs, f"unknown env(s) {', '.join(unknown_envs)} (envs: {', '.join(env_names())})"),
            (bool(self.seeds) and all(0 <= s < 2**32 for s in self.seeds) and len(set(self.seeds)) == len(self.seeds),
             f"seeds must be a list of distinct integers in [0, 2^32) (got {list(self.seeds)!r})"),
            _count_check("steps", self.steps, 1, MAX_STEPS),
            _count_check("save_every", self.save_every, 0, MAX_STEPS),
            _mapping_check("set", self.set),
            (bool(self.sets), "sets must be a non-empty list of override mappings (got [])"),
            *(_mapping_check(f"sets[{index}]", overrides) for index, overrides in enumerate(self.sets)),
            *([] if self.members_per_task is None else [_count_check("members_per_task", self.members_per_task, 1, 100_000)]),
            _count_check("max_retries", self.max_retries, 0, 100),
            (4 <= self.lease_timeout_s <= 86400,
             f"lease_timeout_s must be a number of seconds in [4, 86400] (got {self.lease_timeout_s!r})"),
            (collect_agent is None or collect_agent in self.agents,
             f"collect.agent must be one of the sweep's agents ({', '.join(self.agents)}), got {collect_agent!r}"),
        ])

    def to_dict(self) -> dict[str, Any]:
        """The spec as stored with the sweep (JSON; `parse_spec` of it gives the same spec)."""
        data = asdict(self)
        for key in ("agents", "envs", "seeds", "sets"):
            data[key] = list(data[key])
        if self.collect is not None:
            data["collect"]["qualities"] = list(self.collect.qualities)
        return data

    def overrides(self, index: int) -> list[str]:
        """The `--set` strings of override set `index`: the common `set`, then that set's own."""
        return [f"{key}={_yaml_value(value)}" for key, value in {**self.set, **self.sets[index]}.items()]


KEYS = {f.name for f in fields(SweepSpec)}


def _yaml_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML): strings as they are, anything else as JSON (a YAML subset)."""
    return json.dumps(value) if not isinstance(value, str) else value


def load_spec(path: Path) -> SweepSpec:
    return parse_spec(load_yaml_file(path), str(path))


def parse_spec(data: Any, where: str = "the sweep spec") -> SweepSpec:
    """Validate `data` (a mapping, e.g. from YAML) into a SweepSpec (`build_config`: each value coerced to
    its field's type, then `validate`); BadInput naming the problem."""
    if not isinstance(data, dict):
        raise BadInput(f"{where} must be a mapping with keys {', '.join(sorted(KEYS))}.")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(sorted(KEYS))}.")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise BadInput(f"{where}: missing key(s) {', '.join(missing)}.")
    data = {**data, "envs": env_names() if data["envs"] == ALL_ENVS else data["envs"]}
    if data.get("set", {}) is None:  # `set:` with nothing under it: no common overrides
        data["set"] = {}
    try:
        spec = build_config(SweepSpec, data)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    if spec.collect is not None and spec.collect.agent is None:  # default: the sweep's first agent
        spec = replace(spec, collect=replace(spec.collect, agent=spec.agents[0]))
    for agent in spec.agents:  # every run config resolves (unknown keys, bad values) before any work
        for index in range(len(spec.sets)):
            resolve_run_config(agent, spec.envs[0], overrides=spec.overrides(index),
                               cli_training={"max_steps": spec.steps, "save_every": spec.save_every, "seed": spec.seeds[0]})
    return spec


def _count_check(key: str, value: int, low: int, high: int) -> tuple[bool, str]:
    return low <= value <= high, f"{key} must be an integer in [{low:,}, {high:,}] (got {value!r})"


def _mapping_check(key: str, value: Any) -> tuple[bool, str]:
    return (isinstance(value, dict) and all(isinstance(k, str) and "." in k for k in value),
            f"{key} must map section.key to a value, e.g. {{training.random_steps: 100}} (got {value!r})")
