"""The environments of a population of K training runs, stepped together: member k's B users in its own
env with its own seed.

Members that share an environment share one batched `TopicRec` (their users are rows of one batch, each
row keyed by its member's seed through `CounterRNG.concat`), so K seeds of one env cost one simulator
step of K·B users. Members of different environments run in one `TopicRec` per environment (the six
environments differ in item table, click model and diversity penalty). A user's trajectory depends only
on (env, seed, user id), so member k sees exactly the users a solo run with its env and seed would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.sim.rng import CounterRNG
from slatectl.sim.topicrec import USER_STREAM, Observation, TopicRec


@dataclass
class MemberStep:
    observation: Observation  # slate, clicks: (K, B, slate_size)
    reward: torch.Tensor  # (K, B)
    user_state: torch.Tensor  # (K, B, D)


class MemberEnvs:
    """`envs[k]` is member k's environment; members with the same env name must pass the same object."""

    def __init__(self, envs: list[TopicRec]):
        if not envs:
            raise ValueError("a population needs at least one member")
        first = envs[0].config
        for env in envs:
            c = env.config
            if (c.slate_size, c.episode_length, c.embedding_dim, c.num_items) != (
                    first.slate_size, first.episode_length, first.embedding_dim, first.num_items):
                raise ValueError("population members' environments must share slate size, episode length, "
                                 "embedding size and item count")
        self.members = len(envs)
        self.config = first  # the shared shape parameters (slate size, episode length, ...)
        groups: dict[int, list[int]] = {}
        self._envs: dict[int, TopicRec] = {}
        for k, env in enumerate(envs):
            groups.setdefault(id(env), []).append(k)
            self._envs[id(env)] = env
        self.groups = [(self._envs[key], torch.tensor(members)) for key, members in groups.items()]
        self._batch = 0

    def reset(self, user_ids: torch.Tensor, seeds: list[int]) -> Observation:
        """Every member's users `user_ids` (B,), member k with seed `seeds[k]`; returns (K, B, ·)."""
        user_ids = torch.as_tensor(user_ids, dtype=torch.int64).reshape(-1)
        self._batch = B = user_ids.shape[0]
        K, S = self.members, self.config.slate_size
        slates = torch.empty(K, B, S, dtype=torch.int64)
        clicks = torch.empty(K, B, S, dtype=torch.int64)
        for env, members in self.groups:
            rng = CounterRNG.concat([CounterRNG(seeds[k], USER_STREAM, user_ids) for k in members.tolist()])
            first = env.reset_streams(rng)
            slates[members] = first.slate.view(len(members), B, S)
            clicks[members] = first.clicks.view(len(members), B, S)
        return Observation(slate=slates, clicks=clicks)

    def user_states(self) -> torch.Tensor:
        """(K, B, D) the hidden user embeddings now."""
        out = torch.empty(self.members, self._batch, self.config.embedding_dim)
        for env, members in self.groups:
            out[members] = env.user.view(len(members), self._batch, -1)
        return out

    def step(self, slates: torch.Tensor) -> MemberStep:
        """slates (K, B, slate_size) → member k's users step in member k's env."""
        K, B, S = self.members, self._batch, self.config.slate_size
        shown = torch.empty(K, B, S, dtype=torch.int64)
        clicks = torch.empty(K, B, S, dtype=torch.int64)
        reward = torch.empty(K, B)
        user_state = torch.empty(K, B, self.config.embedding_dim)
        for env, members in self.groups:
            n = len(members)
            result = env.step(slates[members].reshape(n * B, S))
            shown[members] = result.observation.slate.view(n, B, S)
            clicks[members] = result.observation.clicks.view(n, B, S)
            reward[members] = result.reward.view(n, B)
            user_state[members] = result.user_state.view(n, B, -1)
        return MemberStep(Observation(slate=shown, clicks=clicks), reward, user_state)
