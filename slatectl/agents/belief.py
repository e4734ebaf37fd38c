"""GRU belief encoder (reference notes §7.1, docs/algorithms.md §4): the click history → a belief state. The
layout only; the stacked agents run it (`StackedAgent.encode_episodes`, `observe`: nn.GRU's cell, the same
states up to float rounding). The reference's unused "reduction" MLP is not built."""

from __future__ import annotations

from torch import nn


class GRUBelief(nn.Module):
    """One per consumer ("actor", "critic"): a from-scratch item table (N(0, 1), trained by its consumer's
    RL loss) and a 1-layer GRU from a zero state whose input per observation is each slot's item embedding
    followed by its click bit (slate_size·(item_dim + 1) = 210)."""

    def __init__(self, num_items: int, item_dim: int, slate_size: int, state_dim: int):
        super().__init__()
        self.item_embeddings = nn.Embedding(num_items, item_dim)  # default init is N(0, 1): "scratch"
        self.gru = nn.GRU(input_size=slate_size * (item_dim + 1), hidden_size=state_dim, num_layers=1, batch_first=True)
