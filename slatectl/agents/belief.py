"""GRU belief encoder (reference notes §7.1): the click history → a belief state of the hidden user.

One module per consumer ("actor", "critic"). Each owns a from-scratch item table (nn.Embedding, N(0, 1)
init, trained by its consumer's RL loss) and a 1-layer GRU whose input per observation is the K slate
items' embeddings each followed by its click bit, slot after slot (K·(D+1) = 210 for K = 10, D = 20),
hidden size `belief_state_dim` (20), initial hidden state 0. The belief state is the GRU output after
each observation (the reference's unused "reduction" MLP is not built).

Two ways to run it, which give the same states (up to float rounding):
- online (acting): `reset(o_0)` then `step(o_t)` per observation, batched over B users;
- training: `encode_episodes(slates, clicks)` re-encodes whole episodes from a zero hidden state,
  state t = belief after o_0 … o_t.
"""

from __future__ import annotations

import torch
from torch import nn

from slatectl.sim.topicrec import Observation


class GRUBelief(nn.Module):
    def __init__(self, num_items: int = 1000, item_dim: int = 20, slate_size: int = 10, state_dim: int = 20):
        super().__init__()
        self.num_items, self.item_dim, self.slate_size, self.state_dim = num_items, item_dim, slate_size, state_dim
        self.item_embeddings = nn.Embedding(num_items, item_dim)  # default init is N(0, 1): "scratch"
        self.gru = nn.GRU(input_size=slate_size * (item_dim + 1), hidden_size=state_dim, num_layers=1, batch_first=True)
        self._hidden: torch.Tensor | None = None  # (1, B, state_dim) online hidden state; not saved

    def observation_features(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """(…, K) items and clicks → (…, K·(D+1)): [e(item_1), click_1, e(item_2), click_2, …]."""
        emb = self.item_embeddings(slates)
        return torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(-2)

    # -- training -----------------------------------------------------------------------------------
    def encode_episodes(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """(E, T, K) slates and clicks → (E, T, state_dim) beliefs, from a zero initial hidden state."""
        out, _ = self.gru(self.observation_features(slates, clicks))
        return out

    # -- online -------------------------------------------------------------------------------------
    @property
    def state(self) -> torch.Tensor:
        if self._hidden is None:
            raise RuntimeError("belief has no online state: call reset(first_observation) first")
        return self._hidden[0]

    def reset(self, first: Observation) -> torch.Tensor:
        """Start B episodes from a zero hidden state and consume the reset observation o_0."""
        self._hidden = None
        return self.step(first)

    def step(self, observation: Observation) -> torch.Tensor:
        """Consume one observation per user; returns the current belief state (B, state_dim)."""
        x = self.observation_features(observation.slate, observation.clicks).unsqueeze(1)
        _, self._hidden = self.gru(x, self._hidden)
        return self._hidden[0]
