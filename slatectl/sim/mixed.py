"""One batched TopicRec whose users live in different environments (population training, issue 11).

The six environments differ only in their item table (focused / diffuse), click model (examination
propensities) and diversity penalty; every other parameter is shared (checked). `MixedTopicRec` lays
the V environments' item tables end to end — a union of V·N items, environment v owning ids
v·N … v·N + N − 1 — and keeps per user its environment's propensities, penalty and max score. Users see
and send item ids of their own environment (0 … N − 1); the offset is added inside. Each user's
trajectory is the one its own environment gives (same draws, same arithmetic), which
tests/test_population.py checks against plain TopicRecs.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from slatectl.sim.click_model import relevance
from slatectl.sim.rng import CounterRNG
from slatectl.sim.topicrec import Observation, StepResult, TopicRec

#: Parameters that may differ between the environments of one MixedTopicRec.
PER_USER_FIELDS = ("name", "item_embeddings", "click_model", "diversity_penalty")


class MixedTopicRec(TopicRec):
    def __init__(self, envs: list[TopicRec]):
        first = envs[0].config
        for env in envs:
            if {k: v for k, v in env.config.to_dict().items() if k not in PER_USER_FIELDS} != \
                    {k: v for k, v in first.to_dict().items() if k not in PER_USER_FIELDS}:
                raise ValueError(f"{env.config.name} and {first.name} differ in more than "
                                 f"{', '.join(PER_USER_FIELDS[1:])}; they cannot share a batch")
        self.variants = envs
        self.own_items = first.num_items
        union = torch.cat([env.item_embeddings for env in envs])
        super().__init__(replace(first, num_items=union.shape[0]), union)
        self.config_per_variant = [env.config for env in envs]
        on = {"device": self.device}
        self._max_scores = torch.tensor([env.max_score for env in envs], **on)
        self._propensities = torch.stack([env.propensities for env in envs])
        self._penalties = torch.tensor([float(env.config.diversity_penalty) for env in envs], **on)
        self._initial_slates = torch.stack([env.initial_slate for env in envs])
        self.variant = torch.zeros(0, dtype=torch.int64, **on)

    def to(self, device: torch.device | str) -> "MixedTopicRec":
        """These environments on `device`: itself when already there, else a new MixedTopicRec."""
        if self.item_embeddings.to(device) is self.item_embeddings:
            return self
        return MixedTopicRec([env.to(device) for env in self.variants])

    def reset_variants(self, rng: CounterRNG, variant: torch.Tensor) -> Observation:
        """Reset users with streams `rng`, user i living in environment `variants[variant[i]]`."""
        self.variant = torch.as_tensor(variant, dtype=torch.int64, device=self.device).reshape(-1)
        if self.variant.shape[0] != rng.batch_size:
            raise ValueError("one variant per user is needed")
        self.item_id_offset = self.variant * self.own_items
        self.max_score = self._max_scores[self.variant].unsqueeze(1)  # (B, 1): per-user normaliser
        self.initial_slate = self._initial_slates[self.variant] + self.item_id_offset[:, None]
        first = super().reset_streams(rng)
        return Observation(slate=first.slate - self.item_id_offset[:, None], clicks=first.clicks)

    def reset(self, user_ids: torch.Tensor, seed: int) -> Observation:
        raise TypeError("MixedTopicRec users need their environments: use reset_variants(rng, variant)")

    def step(self, slate: torch.Tensor, oracle: bool | None = None) -> StepResult:
        slate = torch.as_tensor(slate, dtype=torch.int64, device=self.device)
        # Oracle positions (< 0) stay negative so the base class fills them.
        union = torch.where(slate < 0, slate, slate + self.item_id_offset[:, None])
        result = super().step(union, oracle)
        shown = result.observation.slate - self.item_id_offset[:, None]
        return StepResult(Observation(shown, result.observation.clicks), result.reward, result.done,
                          result.user_state, result.bored)

    # -- per-user versions of the env-dependent pieces -------------------------------------------------
    def _click(self, slate: torch.Tensor, masked_user: torch.Tensor, counter: int) -> torch.Tensor:
        cfg = self.config
        slate_scores = self._slate_scores(slate, masked_user)
        topics = self.item_topics[slate]
        counts = torch.zeros(slate.shape[0], cfg.num_topics, dtype=torch.int64, device=self.device)
        counts.scatter_add_(1, topics, torch.ones_like(topics))
        crowded = counts.max(dim=1).values >= cfg.diversity_threshold
        divisor = torch.where(crowded, self._penalties[self.variant], 1.0)  # a scalar: no host-to-device copy
        probs = relevance(slate_scores, cfg.offset, cfg.slope) / divisor[:, None] * self._propensities[self.variant]
        return (self.rng.uniform(counter, cfg.slate_size) < probs).to(torch.int64)

    def item_scores(self, masked_user: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) ⟨e_i, ũ⟩ / max_score over each user's own environment's N items."""
        u = self.masked_user() if masked_user is None else masked_user
        tables = self.item_embeddings.view(len(self.variants), self.own_items, -1)[self.variant]  # (B, N, D)
        return torch.bmm(tables, u[:, :, None]).squeeze(-1) / self.max_score  # as einsum, without its planning

    def oracle_slate(self, masked_user: torch.Tensor | None = None) -> torch.Tensor:
        """Top-K of each user's own items, as union ids (the base step fills oracle positions with them)."""
        top = self.item_scores(masked_user).topk(self.config.slate_size, dim=1).indices
        return top + self.item_id_offset[:, None]
