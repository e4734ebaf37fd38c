"""GRU belief encoder (reference notes §7.1): the click history → a belief state of the hidden user.

One module per consumer ("actor", "critic"). Each owns a from-scratch item table (nn.Embedding, N(0, 1)
init, trained by its consumer's RL loss) and a 1-layer GRU whose input per observation is the K slate
items' embeddings each followed by its click bit, slot after slot (K·(D+1) = 210 for K = 10, D = 20),
hidden size `belief_state_dim` (20), initial hidden state 0. The belief state is the GRU output after
each observation (the reference's unused "reduction" MLP is not built).

This module is the layout (the parameters and their names in a checkpoint). The stacked agents run it,
for K members at once, in `slatectl.agents.stacked` (`encode_episodes` for whole episodes, `observe`
online): nn.GRU's cell, the same states up to float rounding.
"""

from __future__ import annotations

from torch import nn


class GRUBelief(nn.Module):
    def __init__(self, num_items: int = 1000, item_dim: int = 20, slate_size: int = 10, state_dim: int = 20):
        super().__init__()
        self.num_items, self.item_dim, self.slate_size, self.state_dim = num_items, item_dim, slate_size, state_dim
        self.item_embeddings = nn.Embedding(num_items, item_dim)  # default init is N(0, 1): "scratch"
        self.gru = nn.GRU(input_size=slate_size * (item_dim + 1), hidden_size=state_dim, num_layers=1, batch_first=True)
