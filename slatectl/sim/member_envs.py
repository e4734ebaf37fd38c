"""The environments of a population of K training runs, stepped as ONE batch: member k's B users in its
own env with its own seed.

All K·B users are rows of one batched simulator, member-major (rows k·B … k·B + B − 1 are member k's),
each row keyed by its member's seed through `CounterRNG.concat`. Members of one environment use a plain
`TopicRec`; members of different environments a `MixedTopicRec` (per-user item table, click model and
diversity penalty). A user's trajectory depends only on (env, seed, user id), so member k sees exactly
the users a solo run with its env and seed would see, and a simulator step costs one batched step
whatever K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.sim.mixed import MixedTopicRec
from slatectl.sim.rng import CounterRNG
from slatectl.sim.topicrec import USER_STREAM, Observation, TopicRec


@dataclass
class MemberStep:
    observation: Observation  # slate, clicks: (K, B, slate_size)
    reward: torch.Tensor  # (K, B)
    user_state: torch.Tensor  # (K, B, D)
    bored: torch.Tensor  # (K, B, topics) hidden: the users' bored topics during this step


class MemberEnvs:
    """`envs[k]` is member k's environment (members of one env may pass the same or equal objects). With
    `device`, the batched simulator runs there (the agent's device: acting then sends nothing to the host;
    same config, same table, same counter-based draws, so the same users); else where the envs are."""

    def __init__(self, envs: list[TopicRec], device: torch.device | str | None = None):
        if not envs:
            raise ValueError("a population needs at least one member")
        distinct: dict[str, TopicRec] = {}
        for env in envs:
            if env.config.name not in distinct:
                distinct[env.config.name] = env if device is None else env.to(device)
        names = list(distinct)
        self.members = len(envs)
        self.env: TopicRec = distinct[names[0]] if len(names) == 1 else MixedTopicRec(list(distinct.values()))
        self.device: torch.device = self.env.device
        self.variant = torch.tensor([names.index(env.config.name) for env in envs], device=self.device)
        self.config = envs[0].config  # shape parameters, shared by all members (MixedTopicRec checks)
        self._batch = 0
        self._episodes: tuple[torch.Tensor, list[int]] | None = None

    def reset(self, user_ids: torch.Tensor, seeds: list[int]) -> Observation:
        """Every member's users `user_ids` (B,), member k with seed `seeds[k]`; returns (K, B, ·)."""
        user_ids = torch.as_tensor(user_ids, dtype=torch.int64, device=self.env.device).reshape(-1)
        self._batch = B = user_ids.shape[0]
        self._episodes = (user_ids, list(seeds))
        rng = self.user_streams(USER_STREAM)
        if isinstance(self.env, MixedTopicRec):
            first = self.env.reset_variants(rng, self.variant.repeat_interleave(B))
        else:
            first = self.env.reset_streams(rng)
        return Observation(slate=self._split(first.slate), clicks=self._split(first.clicks))

    def user_streams(self, stream: int) -> CounterRNG:
        """Counter streams `stream` of the users now playing, member-major as the rows: a per-user random
        policy keys its draws on them (the user ids and seeds of the last `reset`), so member k's user u
        draws what a solo run's user u of seed `seeds[k]` draws, whatever the batch."""
        if self._episodes is None:
            raise RuntimeError("no episodes yet: call reset first")
        user_ids, seeds = self._episodes
        return CounterRNG.concat([CounterRNG(seed, stream, user_ids) for seed in seeds])

    @property
    def t(self) -> int:
        """Steps taken in the current episodes (the simulator's clock)."""
        return self.env.t

    def user_states(self) -> torch.Tensor:
        """(K, B, D) the hidden user embeddings now."""
        return self._split(self.env.user)

    def step(self, slates: torch.Tensor, oracle: bool | None = None) -> MemberStep:
        """slates (K, B, slate_size) → member k's users step in member k's env (`oracle` as `TopicRec.step`)."""
        result = self.env.step(slates.reshape(self.members * self._batch, -1), oracle=oracle)
        obs = result.observation
        return MemberStep(Observation(self._split(obs.slate), self._split(obs.clicks)),
                          self._split(result.reward), self._split(result.user_state), self._split(result.bored))

    def _split(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.view(self.members, self._batch, *rows.shape[1:])
