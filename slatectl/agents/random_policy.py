"""The uniform random slate policy as an agent (the `random` quality of collected datasets).

It acts the same in every mode: K distinct uniformly random items per user, drawn from the simulator's
per-user counter streams (`slatectl.sim.policies.RandomSlatePolicy`) keyed by the (user id, seed) that
`begin_episodes` receives, so a user's slates do not depend on the batch it is simulated in. It has no
belief (an empty (B, 0) state), no action vector, nothing to learn, and is not trainable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, Backward, default_backward
from slatectl.agents.pretrained import AgentInputs
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.sim.policies import RandomSlatePolicy
from slatectl.sim.topicrec import Observation, TopicRec


@dataclass(frozen=True)
class RandomParams:
    """No hyper-parameters; `capacity`/`batch_size` exist only to satisfy the params contract."""

    capacity: int = 1
    batch_size: int = 1

    def validate(self) -> None:
        pass


class RandomAgent(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.policy = RandomSlatePolicy()
        self._users = 0

    def begin_episodes(self, first: Observation, user_ids: torch.Tensor | None = None, seed: int | None = None) -> None:
        if user_ids is None or seed is None:
            raise ValueError("the random policy needs the episodes' user ids and seed")
        self.policy.reset(user_ids, seed)
        self._users = int(user_ids.shape[0])

    def act(self, env: TopicRec, mode: ActMode) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.act(env), torch.zeros(env.batch_size, 0)

    def observe(self, observation: Observation) -> None:
        pass

    def belief_state(self) -> torch.Tensor:
        return torch.zeros(self._users, 0)

    def update(self, batch: EpisodeBatch, backward: Backward = default_backward) -> dict[str, float]:
        return {}


def build_random(params: RandomParams, env: TopicRec, inputs: AgentInputs) -> RandomAgent:
    return RandomAgent()


register_agent(AgentSpec("random", "Random", RandomParams, build_random, trainable=False))
