"""What is about several runs trained together (`slatectl.train.loop.Trainer` with K > 1): the members'
configs (envs × seeds), the checks that they can run in lockstep, the group id, finding and claiming a
group's runs to resume it, and what the trainer keeps per member."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, replace

import torch

from slatectl.agents.base import Agent
from slatectl.errors import BadInput
from slatectl.registry import Registry, Run
from slatectl.sim.topicrec import TopicRec
from slatectl.train.assembly import ResolvedInputs
from slatectl.train.config import RunConfig
from slatectl.train.replay import EpisodeReplay


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
    if first.training.precision != "32":  # the stacked agents' hand-written GRU/critic kernels are float32
        raise BadInput("training runs at --precision 32 only for now: the stacked agents' hand-written GRU and "
                       "critic kernels (every run trains stacked, a solo run as a stack of one) are float32-only.")
    pairs = [(c.env, c.training.seed) for c in configs]
    if len(set(pairs)) != len(pairs):
        raise BadInput("two members of the population have the same env and seed; give distinct seeds.")


def new_group_id() -> str:
    return f"pop-{uuid.uuid4().hex[:12]}"


def group_runs(registry: Registry, group: str) -> list[Run]:
    """The member runs of a group, in member order; BadInput when the group is unknown or incomplete."""
    if not group.strip():  # an empty filter would match every run in the registry
        raise BadInput("a population group id is needed (got an empty one); `slatectl inspect run RUN_ID` shows "
                       "a member's group id.")
    runs = sorted(registry.list_runs(group_id=group), key=lambda r: r.config["population"]["member"])
    if not runs:
        raise BadInput(f"no population {group!r} in the registry (a member's group id is shown by "
                       f"`slatectl inspect run RUN_ID`; `slatectl ckpt list --group GROUP` lists its checkpoints).")
    size = runs[0].config["population"]["size"]
    if len(runs) != size:
        raise BadInput(f"population {group} should have {size} runs; the registry has {len(runs)}.")
    return runs


def claim_members(registry: Registry, runs: list[Run]) -> None:
    """Take every member's lease, or none: when one member's lease is still live (BadInput naming its
    holder), the members claimed before it get their previous status back."""
    for member, run in enumerate(runs):
        try:
            registry.claim_run(run.id)
        except BadInput:
            for earlier in runs[:member]:  # a `running` member here had a stale lease: its process is gone
                registry.finish_run(earlier.id, status="interrupted" if earlier.status == "running" else earlier.status,
                                    error=earlier.error)
            raise


@dataclass
class Member:
    config: RunConfig
    env: TopicRec
    agent: Agent  # layout of the member's weights (the trained values live in the stacked agent)
    inputs: ResolvedInputs
    generator: torch.Generator  # continues the solo run's global RNG stream after agent construction
    replay: EpisodeReplay
    run_id: int = -1
    recorded_validations: set[int] = field(default_factory=set)
    recorded_checkpoints: set[int] = field(default_factory=set)
