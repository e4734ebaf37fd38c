"""Play whole episodes of a stacked agent's K members in the simulator (K = 1 for a lone run or a dataset),
batched over users: training, validation, test and collection. Observations go to the agent's device, slates
to the simulator's; with both on one device nothing is copied and no env step waits for the host."""

from __future__ import annotations

import torch

from slatectl.agents.base import ActMode, EpisodeBatch
from slatectl.agents.stacked import StackedAgent
from slatectl.sim.member_envs import MemberEnvs, MemberStep
from slatectl.sim.topicrec import Observation


@torch.no_grad()
def begin_member_episodes(envs: MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor,
                          seeds: list[int]) -> Observation:
    """Member k's users `user_ids` of its env with seed `seeds[k]`: reset them and start the agent's
    beliefs on the first observation, which is returned ((K, B, slate), on the simulator's device)."""
    first = envs.reset(user_ids, seeds)
    agent.begin_episodes(first.slate.to(agent.device), first.clicks.to(agent.device))
    return first


@torch.no_grad()
def member_step(envs: MemberEnvs, agent: StackedAgent, mode: ActMode,
                generators: list[torch.Generator]) -> tuple[torch.Tensor, MemberStep]:
    """One step of every member's users: the agent acts in `mode` (member k drawing from `generators[k]`),
    the envs step, the agent observes. Returns the raw actions (K, B, A) and the step's result."""
    slate, action = agent.act(mode, generators, envs)
    result = envs.step(slate.to(envs.device), oracle=False)  # agents never put oracle positions in a slate: no check
    agent.observe(result.observation.slate.to(agent.device), result.observation.clicks.to(agent.device))
    return action, result


@torch.no_grad()
def play_member_episodes(envs: MemberEnvs, agent: StackedAgent, user_ids: torch.Tensor, seeds: list[int],
                         mode: ActMode, generators: list[torch.Generator]) -> EpisodeBatch:
    """The trainer's episodes: member k plays users `user_ids` of its env with seed `seeds[k]` (the moves
    collection's recorder makes too). An `EpisodeBatch` of (K, B, …) fields on the simulator's device."""
    cfg = envs.config
    K, B, H, S = envs.members, user_ids.shape[0], cfg.episode_length, cfg.slate_size
    on = {"device": envs.device}  # the episode buffers live with the simulator
    slates = torch.empty(K, B, H + 1, S, dtype=torch.int64, **on)
    clicks = torch.empty(K, B, H + 1, S, dtype=torch.float32, **on)
    actions = torch.zeros(K, B, H, agent.action_dim, dtype=torch.float32, **on)
    rewards = torch.empty(K, B, H, dtype=torch.float32, **on)
    user_states = torch.empty(K, B, H + 1, cfg.embedding_dim, dtype=torch.float32, **on)
    first = begin_member_episodes(envs, agent, user_ids, seeds)
    slates[:, :, 0], clicks[:, :, 0], user_states[:, :, 0] = first.slate, first.clicks, envs.user_states()
    for t in range(H):
        action, result = member_step(envs, agent, mode, generators)
        slates[:, :, t + 1], clicks[:, :, t + 1] = result.observation.slate, result.observation.clicks
        if agent.action_dim:
            actions[:, :, t] = action
        rewards[:, :, t] = result.reward
        user_states[:, :, t + 1] = result.user_state
    return EpisodeBatch(slates, clicks, actions, slates[:, :, 1:], rewards, user_states)


def member_episodes(batch: EpisodeBatch, k: int, rows: slice = slice(None)) -> EpisodeBatch:
    """Member k's episodes (rows `rows`, default all) of a population batch, as a solo batch."""
    return EpisodeBatch(*(getattr(batch, f)[k, rows] for f in batch.__dataclass_fields__))


def stack_batches(batches: list[EpisodeBatch]) -> EpisodeBatch:
    return EpisodeBatch(*(torch.stack([getattr(b, f) for b in batches]) for f in EpisodeBatch.__dataclass_fields__))
