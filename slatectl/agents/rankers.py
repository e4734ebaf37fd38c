"""Rankers: frozen maps from a continuous action to a slate (reference notes §5, §7.3). `StackedSAC.rank` ranks
with each member's tables: TopK the K items with the largest ⟨e_i, a⟩ for a query a, sorted (distinct items);
GeMS per slot the argmax item of the frozen decoder's logits for a latent z (duplicates possible, as the reference).
"""

from __future__ import annotations

import torch
from torch import nn


# Rows of queries per block, so the block's scores (1024 × N floats) stay in cache.
_CPU_BLOCK_ROWS = 1024
# Item-group sizes tried in this order for the two-level argmax (the first that divides N).
_GROUP_SIZES = (100, 80, 64, 50, 40, 32, 25, 20, 16)


@torch.no_grad()
def first_argmax_of_products(queries: torch.Tensor, table_t: torch.Tensor) -> torch.Tensor:
    """(R, D) queries, (D, N) item table → (R,) index of the largest ⟨q, e_i⟩, the first one on ties.

    Exactly `(queries @ table_t).max(dim=-1).indices` (the same product, a block of rows at a time), faster
    on a CPU (GeMS decoding for many users; BENCHMARKS.md), where the index-tracking `max` costs more than
    the product and values-only `amax` is much cheaper: the best group of G items by `amax` (the first group
    holding the row's maximum), then the first maximal item of that group — the index `max` returns (torch
    documents `argmax` and `max` as returning the first maximal index on ties). Its caller uses it on CPUs.
    """
    rows, n_items = queries.shape[0], table_t.shape[1]
    out = torch.empty(rows, dtype=torch.int64, device=queries.device)
    group = next((g for g in _GROUP_SIZES if n_items % g == 0 and n_items // g >= 4), None)
    scores_buffer = torch.empty(min(rows, _CPU_BLOCK_ROWS), n_items, dtype=queries.dtype, device=queries.device)
    groups_per_row = n_items // group if group is not None else 1
    # Row r's group g is row r·groups_per_row + g of the block's (rows·groups, G) view.
    group_row_offsets = torch.arange(0, min(rows, _CPU_BLOCK_ROWS) * groups_per_row, groups_per_row,
                                     device=queries.device)
    for start in range(0, rows, _CPU_BLOCK_ROWS):
        stop = min(start + _CPU_BLOCK_ROWS, rows)
        scores = torch.mm(queries[start:stop], table_t, out=scores_buffer[: stop - start])
        if group is None:
            out[start:stop] = scores.max(dim=-1).indices
            continue
        groups = scores.view(stop - start, groups_per_row, group)
        best_group = groups.amax(dim=-1).argmax(dim=-1)
        # The winning group's scores, (rows, G): index_select on the flat view is a plain row copy,
        # several times cheaper than advanced indexing with two index tensors.
        in_group = groups.view(-1, group).index_select(0, best_group.add_(group_row_offsets[: stop - start]))
        best_group.sub_(group_row_offsets[: stop - start])
        torch.add(in_group.argmax(dim=-1), best_group, alpha=group, out=out[start:stop])
    return out


def item_table_box(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension [min, max] of an (N, D) item table as (center, scale), the action box of agents that
    act in item-embedding space (SAC+TopK, SAC+WkNN)."""
    low, high = table.min(dim=0).values, table.max(dim=0).values
    scale = (high - low) / 2
    return low + scale, scale


class Ranker(nn.Module):
    """A frozen ranker's tables (part of the agent's state dict) and its kind."""

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


class GeMSRanker(Ranker):
    """Holds a pretrained GeMS module, frozen (slate: per-slot argmax of the decoder's item logits)."""

    def __init__(self, gems: nn.Module):
        super().__init__()
        self.gems = gems.requires_grad_(False).eval()
