"""The uniform random slate policy as an agent (the `random` quality of collected datasets; not trainable).

In every mode, member k's user u gets K distinct uniformly random items from the simulator's per-user
counter streams (`slatectl.sim.policies.RandomSlatePolicy`) for user u and member k's seed
(`MemberEnvs.user_streams`, made at the first `act` of each set of episodes), so a user's slates do not
depend on the batch it is simulated in. No belief (an empty (B, 0) state), no action, nothing to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, default_backward
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.agents.stacked import StackedAgent
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.policies import POLICY_STREAM
from slatectl.sim.rng import CounterRNG
from slatectl.sim.topicrec import DRAWS_PER_STEP


@dataclass(frozen=True)
class RandomParams:
    """No hyper-parameters; `capacity`/`batch_size` exist only to satisfy the params contract."""

    capacity: int = 1
    batch_size: int = 1

    def validate(self) -> None:
        pass


class RandomAgent(Agent):
    """A member's layout: no weights, no optimizer."""

    params = RandomParams()


class StackedRandom(StackedAgent):
    """K random policies (the module doc)."""

    def __init__(self, members: list[RandomAgent]):
        super().__init__(members)
        self._users = 0
        self._streams: CounterRNG | None = None

    def _check_members(self, members: list[RandomAgent]) -> None:
        if any(type(m) is not RandomAgent for m in members):
            raise ValueError("StackedRandom stacks RandomAgent members")

    @torch.no_grad()
    def begin_episodes(self, slates: torch.Tensor, clicks: torch.Tensor) -> None:
        self._users = slates.shape[1]
        self._streams = None  # new episodes: new users

    def observe(self, slates: torch.Tensor, clicks: torch.Tensor) -> None:
        pass

    def belief_state(self) -> torch.Tensor:
        return torch.zeros(self.K, self._users, 0, device=self.device)

    @torch.no_grad()
    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if envs is None:
            raise ValueError("the random policy keys its slates on the users: pass the members' environments")
        if self._streams is None:
            self._streams = envs.user_streams(POLICY_STREAM)
        cfg = envs.config
        slates = self._streams.distinct_items(envs.t * DRAWS_PER_STEP, cfg.num_items, cfg.slate_size)
        return slates.view(self.K, self._users, -1), torch.zeros(self.K, self._users, 0, device=self.device)

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        return [{} for _ in range(self.K)]


register_agent(AgentSpec("random", "Random", RandomParams, lambda params, env, inputs: RandomAgent(), trainable=False,
                         population=StackedRandom))
