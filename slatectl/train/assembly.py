"""The one way an agent is assembled from a run's config (`build_agent`): training, `--resume` and collection
use it, with the pretrained inputs of a new run (`ensure_agent_inputs`) or those a run recorded
(`registered_agent_inputs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from slatectl.agents import AgentInputs
from slatectl.agents.base import Agent
from slatectl.registry import Registry
from slatectl.sim.factory import make_env
from slatectl.sim.topicrec import TopicRec
from slatectl.train import inputs as pretrained
from slatectl.train.config import MF_SEED, RunConfig, run_config_from_dict

Say = Callable[[str], None]


@dataclass
class ResolvedInputs:
    inputs: AgentInputs
    artifact_ids: list[int] = field(default_factory=list)  # recorded as the run's inputs (lineage)


def ensure_agent_inputs(registry: Registry, config: RunConfig, say: Say) -> ResolvedInputs:
    """The pretrained inputs `config`'s agent needs, found in the registry or built and registered."""
    needs = config.spec.needs_for(config.agent)
    if not needs:
        return ResolvedInputs(AgentInputs())
    env = make_env(config.env)
    logged = pretrained.ensure_logged_data(registry, env, config.logged, say=say)
    ids = [logged.id]
    if "gems" in needs:
        ids.append(pretrained.ensure_gems(registry, env, logged, config.gems, config.training.seed, say=say).id)
    if "mf" in needs:
        ids.append(pretrained.ensure_mf(registry, env, logged, config.mf, MF_SEED, say=say).id)
    return registered_agent_inputs(registry, ids)


def ensure_population_gems(registry: Registry, configs: Sequence[RunConfig], say: Say) -> None:
    """The GeMS of every member that needs one, found or pretrained together: the missing ones train as
    stacked populations (`pretrained.ensure_gems_population`), under the keys `ensure_agent_inputs` then
    finds them by. Nothing draws from the global RNG here (logged data is counter-based, GeMS pretraining
    forks the RNG state or uses its own generators), so the members' streams are unchanged."""
    requests = []
    for config in configs:
        if "gems" in config.spec.needs_for(config.agent):
            env = make_env(config.env)
            logged = pretrained.ensure_logged_data(registry, env, config.logged, say=say)
            requests.append(pretrained.GeMSRequest(env, logged, config.gems, config.training.seed))
    if len(requests) > 1:
        pretrained.ensure_gems_population(registry, requests, say=say)


def registered_agent_inputs(registry: Registry, artifact_ids: Sequence[int]) -> ResolvedInputs:
    """The pretrained inputs a run recorded, loaded by id (SHA-256 checked by the registry)."""
    values: dict = {}
    for artifact_id in artifact_ids:
        artifact = registry.get_artifact(artifact_id)
        if artifact.kind == pretrained.GEMS_KIND:
            values["gems"], values["gems_bounds"] = pretrained.load_gems(registry, artifact)
        elif artifact.kind == pretrained.MF_KIND:
            values["mf"] = registry.load_artifact_state(artifact.id)["item_embeddings"]
    return ResolvedInputs(AgentInputs(**values), [int(i) for i in artifact_ids])


def build_agent(config: RunConfig, inputs: AgentInputs) -> tuple[TopicRec, Agent]:
    """The environment of `config` and a fresh agent for it (the only place agents are built)."""
    env = make_env(config.env)
    return env, config.spec.build(config.agent, env, inputs)


@dataclass
class CheckpointAgent:
    env: TopicRec
    agent: Agent
    config: RunConfig
    run_id: int


def load_checkpoint_agent(registry: Registry, checkpoint_id: int) -> CheckpointAgent:
    """A registered checkpoint's env and agent (eval mode), rebuilt from registered things only."""
    checkpoint = registry.get_checkpoint(checkpoint_id)
    run = registry.get_run(checkpoint.run_id)
    config = run_config_from_dict(run.config)
    env, agent = build_agent(config, registered_agent_inputs(registry, run.inputs).inputs)
    agent.load_state_dict(registry.load_checkpoint_state(checkpoint_id))
    agent.eval()
    return CheckpointAgent(env, agent, config, run.id)
