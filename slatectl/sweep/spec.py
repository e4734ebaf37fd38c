"""The sweep spec: a YAML mapping validated once into a `SweepSpec` (BadInput, exit 2, on any problem).

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

from slatectl.agents import agent_spec
from slatectl.collect.encoder import NO_ENCODER
from slatectl.config_tools import build_config, load_yaml_file
from slatectl.domain import PROMOTABLE_QUALITIES, BehaviourMode, Quality
from slatectl.errors import BadInput
from slatectl.sim.config import ALL_ENVS, env_names
from slatectl.train.config import resolve_run_config

KEYS = {"agents", "envs", "seeds", "steps", "save_every", "set", "sets", "members_per_task", "resources",
        "max_retries", "lease_timeout_s", "collect"}
REQUIRED = ("agents", "envs", "seeds", "steps")
MAX_STEPS = 100_000_000


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def validate(self) -> None:
        for key in ("num_cpus", "num_gpus"):
            if not 0 <= getattr(self, key) <= 1024:
                raise BadInput(f"resources.{key} must be a number in [0, 1024] (got {getattr(self, key)!r}).")
        if self.num_cpus <= 0 and self.num_gpus <= 0:
            raise BadInput("a task needs some resource (num_cpus or num_gpus > 0).")


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
        allowed = ", ".join(PROMOTABLE_QUALITIES)
        if (not self.qualities or any(q not in PROMOTABLE_QUALITIES for q in self.qualities)
                or len(set(self.qualities)) != len(self.qualities)):
            raise BadInput(f"collect.qualities must be distinct qualities among {allowed} "
                           f"(got {[str(q) for q in self.qualities]!r}).")
        if not 1 <= self.episodes <= 10_000_000:
            raise BadInput(f"collect.episodes must be an integer in [1, 10,000,000] (got {self.episodes!r}).")
        if not (self.encoder in (None, NO_ENCODER) or (isinstance(self.encoder, int) and self.encoder >= 0)):
            raise BadInput(f"collect.encoder must be a GeMS artifact id or {NO_ENCODER} (got {self.encoder!r}).")


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


def _yaml_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML): strings as they are, anything else as JSON (a YAML subset)."""
    return json.dumps(value) if not isinstance(value, str) else value


def load_spec(path: Path) -> SweepSpec:
    return parse_spec(load_yaml_file(path), str(path))


def parse_spec(data: Any, where: str = "the sweep spec") -> SweepSpec:
    """Validate `data` (a mapping, e.g. from YAML) into a SweepSpec; BadInput naming every problem."""
    if not isinstance(data, dict):
        raise BadInput(f"{where} must be a mapping with keys {', '.join(sorted(KEYS))}.")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(sorted(KEYS))}.")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise BadInput(f"{where}: missing key(s) {', '.join(missing)}.")
    agents = _names(data["agents"], "agents", where)
    for agent in agents:
        agent_spec(agent, trainable=True)
    envs = tuple(env_names()) if data["envs"] == ALL_ENVS else _names(data["envs"], "envs", where)
    known = set(env_names())
    bad = [env for env in envs if env not in known]
    if bad:
        raise BadInput(f"{where}: unknown env(s) {', '.join(bad)}; envs: {', '.join(env_names())}.")
    seeds = data["seeds"]
    if (not isinstance(seeds, list) or not seeds or not all(_is_int(s) and 0 <= s < 2**32 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise BadInput(f"{where}: seeds must be a list of distinct integers in [0, 2^32) (got {seeds!r}).")
    steps = _count(data["steps"], "steps", where, 1, MAX_STEPS)
    save_every = _count(data.get("save_every", 0), "save_every", where, 0, MAX_STEPS)
    common = _mapping(data.get("set", {}), "set", where)
    sets = data.get("sets", [{}])
    if not isinstance(sets, list) or not sets:
        raise BadInput(f"{where}: sets must be a non-empty list of override mappings (got {sets!r}).")
    sets = tuple(_mapping(s, f"sets[{i}]", where) for i, s in enumerate(sets))
    members = data.get("members_per_task")
    members = None if members is None else _count(members, "members_per_task", where, 1, 100_000)
    resources = _section(Resources, data.get("resources", {}), "resources", where)
    retries = _count(data.get("max_retries", 3), "max_retries", where, 0, 100)
    lease = data.get("lease_timeout_s", 120.0)
    if not isinstance(lease, (int, float)) or isinstance(lease, bool) or not 4 <= lease <= 86400:
        raise BadInput(f"{where}: lease_timeout_s must be a number of seconds in [4, 86400] (got {lease!r}).")
    collect = _collect(data.get("collect"), agents, where)
    spec = SweepSpec(agents, envs, tuple(int(s) for s in seeds), steps, save_every, common, sets, members, resources,
                     retries, float(lease), collect)
    for agent in agents:  # every run config resolves (unknown keys, bad values) before any work
        for index in range(len(sets)):
            resolve_run_config(agent, envs[0], overrides=spec.overrides(index),
                               cli_training={"max_steps": steps, "save_every": save_every, "seed": seeds[0]})
    return spec


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{where}: {key} must be a non-empty list of names (got {value!r}).")
    if len(set(value)) != len(value):
        raise BadInput(f"{where}: {key} lists a name twice ({value!r}).")
    return tuple(value)


def _count(value: Any, key: str, where: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise BadInput(f"{where}: {key} must be an integer in [{low:,}, {high:,}] (got {value!r}).")
    return int(value)


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and "." in k for k in value):
        raise BadInput(f"{where}: {key} must map section.key to a value, e.g. {{training.random_steps: 100}} "
                       f"(got {value!r}).")
    return dict(value)


def _section(cls, value: Any, key: str, where: str):
    """A sub-mapping of the spec as its typed dataclass (`build_config`: types, unknown keys, `validate`)."""
    if not isinstance(value, dict):
        raise BadInput(f"{where}: {key} must be a mapping of {', '.join(f.name for f in fields(cls))} (got {value!r}).")
    try:
        return build_config(cls, value, key + ".")
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def _collect(value: Any, agents: tuple[str, ...], where: str) -> CollectSpec | None:
    if value is None:
        return None
    collect = _section(CollectSpec, value, "collect", where)
    if collect.agent is None:
        return replace(collect, agent=agents[0])
    if collect.agent not in agents:
        raise BadInput(f"{where}: collect.agent must be one of the sweep's agents ({', '.join(agents)}), got {collect.agent!r}.")
    return collect
