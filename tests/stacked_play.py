"""Tests drive an agent as the product does: in its stacked form over K members, a lone agent being K = 1
(`AgentSpec.population`). These helpers build that form, play episodes through the trainer's own loop
(`play_member_episodes`) and run one update, with explicit generators so a test fixes every draw."""

from __future__ import annotations

import dataclasses

import torch

from slatectl.agents import AGENTS, AgentInputs
from slatectl.agents.base import ActMode, Agent, EpisodeBatch
from slatectl.agents.belief import GRUBelief
from slatectl.agents.stacked import StackedAgent
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec
from slatectl.train.episodes import member_episodes, play_member_episodes, stack_batches


def build(name: str, env: TopicRec, inputs: AgentInputs | None = None, seed: int = 0, **overrides) -> Agent:
    """A member layout of agent `name` (its default params with `overrides`) with weights drawn after
    `torch.manual_seed(seed)`, as `AGENTS[name].build` makes it for a run."""
    torch.manual_seed(seed)
    spec = AGENTS[name]
    params = dataclasses.replace(spec.params_cls(), **overrides)
    params.validate()
    return spec.build(params, env, inputs if inputs is not None else AgentInputs())


def gru_belief_states(belief: GRUBelief, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """The reference the stacked belief must equal: the layout's own nn.GRU run by PyTorch over whole
    episodes (E, T, slots) from a zero state, each observation's input being every slot's item embedding
    followed by its click bit (E, T, state)."""
    embedded = belief.item_embeddings(slates)
    features = torch.cat([embedded, clicks.to(embedded.dtype).unsqueeze(-1)], dim=-1).flatten(-2)
    return belief.gru(features)[0]


def stacked(name: str, *members: Agent) -> StackedAgent:
    """The stacked form of `members` (layouts built by `AGENTS[name].build`), as the trainer makes it."""
    return AGENTS[name].population(list(members))


def generators(*seeds: int) -> list[torch.Generator]:
    """One CPU generator per member, seeded with `seeds[k]`."""
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def play(envs: TopicRec | list[TopicRec] | MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor, seed: int | list[int],
         mode: ActMode, draws: list[torch.Generator] | None = None) -> EpisodeBatch:
    """Every member plays users `user_ids` of its env (one env: the same for all) with reset seed `seed`
    (or `seed[k]`), acting in `mode` with member k drawing from `draws[k]` (default: generators seeded
    0 … K − 1). Fields have a leading member dimension (K, B, …)."""
    K = agent.K
    if not isinstance(envs, MemberEnvs):
        envs = MemberEnvs(envs if isinstance(envs, list) else [envs] * K)
    seeds = seed if isinstance(seed, list) else [seed] * K
    draws = draws if draws is not None else generators(*range(K))
    return play_member_episodes(envs, agent, user_ids, seeds, mode, draws)


def play_one(env: TopicRec | MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor, seed: int, mode: ActMode,
             draws: torch.Generator | None = None) -> EpisodeBatch:
    """`play` for a stack of one, returning member 0's episodes without the member dimension."""
    assert agent.K == 1, "play_one drives a stack of one"
    return member_episodes(play(env, agent, user_ids, seed, mode, [draws] if draws is not None else None), 0)


def update_one(agent: StackedAgent, batch: EpisodeBatch, draws: torch.Generator | None = None) -> dict[str, float]:
    """One update of a stack of one on `batch` (no member dimension); member 0's metrics."""
    assert agent.K == 1, "update_one drives a stack of one"
    return agent.update(stack_batches([batch]), [draws if draws is not None else torch.Generator().manual_seed(0)])[0]
