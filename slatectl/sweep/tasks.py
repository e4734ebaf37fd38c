"""A sweep's expansion into tasks. A task is one population: an agent and an override set over some of
the envs × seeds (env-major), at most `members_per_task` of them, so an executor places populations —
which share one process and one stacked model — rather than single runs."""

from __future__ import annotations

from dataclasses import dataclass

from slatectl.sweep.spec import SweepSpec
from slatectl.train.config import RunConfig, resolve_run_config


@dataclass(frozen=True)
class TaskPlan:
    agent: str
    overrides: tuple[str, ...]
    members: tuple[tuple[str, int], ...]  # (env, seed) per member, in member order

    def to_row(self) -> dict:
        return {"agent": self.agent, "overrides": list(self.overrides), "members": [list(m) for m in self.members]}


def expand(spec: SweepSpec) -> list[TaskPlan]:
    """Agents × override sets, each's envs × seeds split into chunks of `members_per_task`."""
    pairs = [(env, seed) for env in spec.envs for seed in spec.seeds]
    size = spec.members_per_task or len(pairs)
    plans = []
    for agent in spec.agents:
        for index in range(len(spec.sets)):
            overrides = tuple(spec.overrides(index))
            for start in range(0, len(pairs), size):
                plans.append(TaskPlan(agent, overrides, tuple(pairs[start:start + size])))
    return plans


def member_configs(spec_steps: int, spec_save_every: int, agent: str, overrides: list[str],
                   members: list[list]) -> list[RunConfig]:
    """The resolved run config of every member of a task (its env and seed; the sweep's steps and saves)."""
    return [resolve_run_config(agent, env, overrides=list(overrides),
                               cli_training={"max_steps": spec_steps, "save_every": spec_save_every, "seed": int(seed)})
            for env, seed in members]
