"""Policies that need no training: uniform random slates, the short-term oracle, the ε-greedy oracle.

Each policy maps the env's state to a (B, K) slate; −1 entries ask the env for its oracle item at that
position. Their randomness comes from their own counter stream, keyed by (seed, user id), so it too is
independent of the batch size.
"""

from __future__ import annotations

from typing import Callable

import torch

from slatectl.sim.rng import CounterRNG
from slatectl.sim.topicrec import DRAWS_PER_STEP, TopicRec

POLICY_STREAM = 1


class SlatePolicy:
    name = "policy"

    #: Whether `act` may return oracle positions (−1), so the env knows without looking at the slate.
    uses_oracle = False

    def reset(self, user_ids: torch.Tensor, seed: int) -> None:
        """Start the users' streams; they live on the device of `user_ids` (the simulator's)."""
        self.rng = CounterRNG(seed, POLICY_STREAM, user_ids)

    def act(self, env: TopicRec) -> torch.Tensor:
        raise NotImplementedError


class RandomSlatePolicy(SlatePolicy):
    """K distinct uniformly random items (the reference draws with replacement: same return within noise)."""

    name = "random"

    def act(self, env: TopicRec) -> torch.Tensor:
        cfg = env.config
        return self.rng.distinct_items(env.t * DRAWS_PER_STEP, cfg.num_items, cfg.slate_size)


class ShortTermOraclePolicy(SlatePolicy):
    """Every position −1: the env fills the top-K items by current ⟨e_i, ũ⟩."""

    name = "oracle"
    uses_oracle = True

    def act(self, env: TopicRec) -> torch.Tensor:
        return torch.full((env.batch_size, env.config.slate_size), -1, dtype=torch.int64, device=env.device)


class EpsGreedyOraclePolicy(SlatePolicy):
    """Per position, with probability ε a random item (distinct among themselves), else the oracle's item."""

    name = "eps-oracle"
    uses_oracle = True

    def __init__(self, epsilon: float = 0.5):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must lie in [0, 1]")
        self.epsilon = epsilon

    def act(self, env: TopicRec) -> torch.Tensor:
        cfg = env.config
        base = env.t * DRAWS_PER_STEP
        random_items = self.rng.distinct_items(base, cfg.num_items, cfg.slate_size)
        explore = self.rng.uniform(base + 2 * cfg.slate_size, cfg.slate_size) < self.epsilon
        return torch.where(explore, random_items, torch.full_like(random_items, -1))


POLICIES: dict[str, Callable[[], SlatePolicy]] = {
    "random": RandomSlatePolicy,
    "oracle": ShortTermOraclePolicy,
    "eps-oracle": EpsGreedyOraclePolicy,
}
