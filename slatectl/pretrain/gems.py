"""GeMS: the slate VAE whose latent space SAC+GeMS acts in (docs/algorithms.md §2). The model only (what RL
and collection use, and whose state dict is the registered artifact); its objective and optimisation are
`gems_stack.py`'s and `gems_train.py`'s. Shapes: slates (B, K) item ids, clicks (B, K) in {0, 1}, z (B, d).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

ReparamNoise = Literal["variance", "std"]

# Hidden sizes of the reference model; not configurable there either.
ENCODER_HIDDEN = (512, 256)
DECODER_HIDDEN = (256, 512)


class GeMS(nn.Module):
    """Slate VAE: q(z | slate, clicks) and p(slate, clicks | z) with a fixed N(0, I) prior. `reparam_noise` is
    the training sampler (`gems_stack.reparameterise`; "variance", the reference's, by default: docs §2)."""

    def __init__(self, num_items: int = 1000, slate_size: int = 10, item_dim: int = 20, latent_dim: int = 32,
                 reparam_noise: ReparamNoise = "variance") -> None:
        super().__init__()
        if reparam_noise not in ("variance", "std"):
            raise ValueError(f"reparam_noise must be 'variance' or 'std', got {reparam_noise!r}")
        self.num_items, self.slate_size, self.item_dim, self.latent_dim = num_items, slate_size, item_dim, latent_dim
        self.reparam_noise: ReparamNoise = reparam_noise

        # nn.Embedding initialises N(0, 1): the reference's "scratch" item table.
        self.item_embeddings = nn.Embedding(num_items, item_dim)
        self.encoder = nn.Sequential(nn.Linear(slate_size * (item_dim + 1), ENCODER_HIDDEN[0]), nn.ReLU(),
                                     nn.Linear(*ENCODER_HIDDEN), nn.ReLU(),
                                     nn.Linear(ENCODER_HIDDEN[1], 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, DECODER_HIDDEN[0]), nn.ReLU(), nn.Linear(*DECODER_HIDDEN),
                                     nn.ReLU())
        self.slate_head = nn.Linear(DECODER_HIDDEN[1], slate_size * item_dim)
        self.click_head = nn.Linear(DECODER_HIDDEN[1], slate_size)

    def encode(self, slates: Tensor, clicks: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K) items, (B, K) clicks -> (mu, logvar), each (B, d). Compact dtypes (int16 ids, uint8
        clicks) are accepted and widened here."""
        emb = self.item_embeddings(slates.long()).flatten(1)  # (B, K*D), slot-major
        return self.encoder(torch.cat([emb, clicks.to(emb.dtype)], dim=1)).chunk(2, dim=1)

    def _slot_queries(self, h: Tensor) -> Tensor:
        """Decoder trunk output (B, hidden) -> one query vector per slot (B, K, item_dim)."""
        return self.slate_head(h).view(-1, self.slate_size, self.item_dim)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, d) -> item logits (B, K, N) and click logits (B, K)."""
        h = self.decoder(z)
        # Detached: the reconstruction loss must not move the item table (the reference learns the table
        # only through the encoder). Forward values are unaffected.
        return self._slot_queries(h) @ self.item_embeddings.weight.detach().T, self.click_head(h)

    @torch.no_grad()
    def rank(self, z: Tensor, chunk_rows: int = 2048) -> Tensor:
        """Deterministic decoding used in RL: the argmax item of each slot (duplicates possible), as
        `decode(z)[0].argmax(-1)` (first maximal item on ties), in chunks of slot queries so the (rows × N)
        score block stays in cache: the argmax over N items dominates collection time on a CPU (BENCHMARKS.md)."""
        queries = self._slot_queries(self.decoder(z)).reshape(-1, self.item_dim)
        table_t = self.item_embeddings.weight.T.contiguous()
        ranks = torch.empty(queries.shape[0], dtype=torch.int64, device=queries.device)
        for start in range(0, queries.shape[0], chunk_rows):
            ranks[start:start + chunk_rows] = (queries[start:start + chunk_rows] @ table_t).max(dim=-1).indices
        return ranks.view(z.shape[0], self.slate_size)

    @torch.no_grad()
    def action_bounds(self, slates: Tensor, clicks: Tensor, chunk_size: int = 10_000) -> tuple[Tensor, Tensor]:
        """Box of the aggregated posterior: per latent dim, [min(mu - sigma), max(mu + sigma)], as (center,
        scale) with scale = (high - low) / 2 and center = low + scale, so that center + scale * tanh(u) spans
        exactly the box. sigma = exp(logvar / 2) whatever the training noise was (as the reference).
        Encodes in chunks to bound memory (GeMS has no train/eval-dependent layer: its mode is left alone)."""
        if slates.shape[0] == 0:
            raise ValueError("action_bounds needs at least one slate")
        low = torch.full((self.latent_dim,), float("inf"))
        high = torch.full((self.latent_dim,), float("-inf"))
        device = self.item_embeddings.weight.device
        for start in range(0, slates.shape[0], chunk_size):
            mu, logvar = self.encode(slates[start:start + chunk_size].to(device),
                                     clicks[start:start + chunk_size].to(device))
            sigma = (0.5 * logvar).exp()
            low = torch.minimum(low, (mu - sigma).min(dim=0).values.cpu())
            high = torch.maximum(high, (mu + sigma).max(dim=0).values.cpu())
        scale = (high - low) / 2
        return low + scale, scale
