"""Rankers: frozen maps from a continuous action to a slate of K item ids (reference notes §5, §7.3).

- `TopKRanker` (SAC+TopK): the action is a query vector in item-embedding space; the slate is the K
  items with the largest dot product ⟨e_i, a⟩, sorted in decreasing order (distinct items).
- `GeMSRanker` (SAC+GeMS): the action is a GeMS latent z; the frozen decoder gives item logits per
  slot and each slot takes its argmax independently (duplicates possible), as in the reference.

Both are frozen: no parameter of a ranker is trained or receives gradients, and they stay in eval mode.
Both also provide the action box (center, scale) the SAC actor acts in.
"""

from __future__ import annotations

import torch
from torch import nn


class Ranker(nn.Module):
    slate_size: int
    action_dim: int

    def rank(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, action_dim) actions → (B, K) int64 slates."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Ranker":
        # Frozen: the agent's .train() must not switch a ranker out of eval mode.
        return super().train(False)


class TopKRanker(Ranker):
    """Top-K items by ⟨e_i, a⟩ over a fixed item table (N, D)."""

    def __init__(self, item_embeddings: torch.Tensor, slate_size: int = 10):
        super().__init__()
        table = torch.as_tensor(item_embeddings, dtype=torch.float32).detach().clone()
        if table.ndim != 2 or table.shape[0] < slate_size:
            raise ValueError(f"TopK needs an (N, D) item table with N >= {slate_size}, got {tuple(table.shape)}")
        self.register_buffer("item_embeddings", table)
        self.slate_size = slate_size
        self.action_dim = table.shape[1]

    @torch.no_grad()
    def rank(self, actions: torch.Tensor) -> torch.Tensor:
        scores = actions @ self.item_embeddings.T
        return scores.topk(self.slate_size, dim=1, sorted=True).indices

    def action_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension [min, max] of the item table as (center, scale)."""
        low = self.item_embeddings.min(dim=0).values
        high = self.item_embeddings.max(dim=0).values
        scale = (high - low) / 2
        return low + scale, scale


class GeMSRanker(Ranker):
    """Wraps a pretrained GeMS module (`rank(z)`: per-slot argmax of the decoder's item logits)."""

    def __init__(self, gems: nn.Module):
        super().__init__()
        self.gems = gems
        for p in self.gems.parameters():
            p.requires_grad_(False)
        self.gems.eval()
        self.slate_size = int(gems.slate_size)
        self.action_dim = int(gems.latent_dim)

    @torch.no_grad()
    def rank(self, actions: torch.Tensor) -> torch.Tensor:
        return self.gems.rank(actions).long()
