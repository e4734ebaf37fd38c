"""The two moves of every episode loop over a stacked agent (training episodes, validation, collection):
start the members' episodes, and take one step. Each loop keeps only what it records and where.

Observations go to the agent's device, slates to the simulator's; with both on one device nothing is
copied and no env step waits for the host. Agents never put oracle positions in a slate, and saying so
spares the simulator a per-step check.
"""

from __future__ import annotations

import torch

from slatectl.agents.base import ActMode
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
    result = envs.step(slate.to(envs.device), oracle=False)
    observation = result.observation
    agent.observe(observation.slate.to(agent.device), observation.clicks.to(agent.device))
    return action, result
