"""The GeMS objective over a leading member dimension K ≥ 1 (docs/algorithms.md §2): the one place its
math is written. A solo pretraining is K = 1; `pretrain gems --env all` stacks several envs' GeMS.

Each member's negative ELBO, CE + λ_click·BCE + λ_KL·KL, is a mean over its own rows, so the gradient of
their sum w.r.t. slice k of the stacked tensors is member k's own, and one elementwise Adam over them is K
solo Adams. Every layer is one batched matmul for all members (not `slatectl.agents.stacked`'s helpers:
pretrain may not import agents); the item lookup reads the K item tables laid end to end (member k's ids
offset by k·N). Trained weights go back as solo `GeMS` state dicts (RL, collection and the registry's form).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from slatectl.pretrain.gems import GeMS

ENCODER_LAYERS = ("encoder.0", "encoder.2", "encoder.4")
DECODER_LAYERS = ("decoder.0", "decoder.2")


def gaussian_kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """(K,) KL(N(mu, exp(logvar)) || N(0, I)) of each member, averaged over its batch *and* latent dims: the
    reference averages over latent dims instead of summing, and λ_KL = 1.0 was tuned against that average."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).view(mu.shape[0], -1).mean(1)


def reparameterise(mu: Tensor, logvar: Tensor, eps: Tensor, reparam_noise: str) -> Tensor:
    """z from standard normal `eps`: "variance" is the reference sampler mu + eps·exp(logvar) (noise scaled
    by the variance), "std" the textbook mu + eps·exp(logvar / 2) (docs §2)."""
    return mu + eps * (logvar.exp() if reparam_noise == "variance" else (0.5 * logvar).exp())


class GeMSStack:
    """K members' GeMS weights stacked (K, …) and the GeMS objective for all of them (module docstring)."""

    def __init__(self, models: list[GeMS], device: torch.device):
        reference = models[0]
        self.num_items, self.slate_size, self.item_dim = reference.num_items, reference.slate_size, reference.item_dim
        self.latent_dim, self.reparam_noise = reference.latent_dim, reference.reparam_noise
        states = [m.state_dict() for m in models]
        # Linear weights are held transposed, (K, in, out): x @ W then reads W row-major and the weight
        # gradient xᵀ·δ comes out in that layout (no transposed operands in the backward's matmuls).
        self.transposed = {name for name in states[0] if name.endswith(".weight") and
                           not name.startswith("item_embeddings")}
        self.tensors: dict[str, Tensor] = {
            name: self._layout(name, torch.stack([s[name].detach() for s in states])).to(device).requires_grad_(True)
            for name in states[0]}
        self.offsets = (torch.arange(len(models), device=device) * self.num_items).view(-1, 1, 1)
        self._scores: Tensor | None = None

    @property
    def members(self) -> int:
        return self.offsets.shape[0]

    def parameters(self) -> list[Tensor]:
        return list(self.tensors.values())

    def _layout(self, name: str, value: Tensor) -> Tensor:
        """A stacked (K, …) state-dict tensor in the stack's layout, or back (the transpose is its own inverse)."""
        return value.transpose(-1, -2).contiguous() if name in self.transposed else value

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's weights as its solo GeMS state dict (on the CPU)."""
        return {name: self._layout(name, t[k:k + 1].detach()).squeeze(0).to("cpu").clone()
                for name, t in self.tensors.items()}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        for name, tensor in self.tensors.items():
            tensor[k].copy_(self._layout(name, state[name].unsqueeze(0)).squeeze(0))

    def _scores_buffer(self, shape: tuple[int, int, int], like: Tensor) -> Tensor:
        """The (K, B·slate, N) item-score block of `_SlotCrossEntropy`, one buffer kept between steps, not a
        fresh block mapped and page-faulted in at every step (BENCHMARKS.md, "Kernel notes: pretrain"). Safe:
        a step's backward runs before the next loss (autograd's version check would refuse it otherwise)."""
        numel = shape[0] * shape[1] * shape[2]
        if self._scores is None or self._scores.numel() < numel or self._scores.dtype != like.dtype:
            self._scores = like.new_empty(numel)
        return self._scores[:numel].view(shape)

    def _linear(self, name: str, x: Tensor) -> Tensor:
        weight, bias = self.tensors[f"{name}.weight"], self.tensors[f"{name}.bias"]
        return torch.baddbmm(bias.unsqueeze(1), x, weight)

    def _mlp(self, names: tuple[str, ...], x: Tensor, relu_last: bool) -> Tensor:
        for i, name in enumerate(names):
            x = self._linear(name, x)
            if relu_last or i + 1 < len(names):
                x = x.relu_()  # in place: the matmul's backward needs its inputs, not its output
        return x

    def encode(self, slates: Tensor, clicks: Tensor) -> tuple[Tensor, Tensor]:
        """(K, B, slate) long ids and float clicks → (mu, logvar), each (K, B, latent): GeMS.encode."""
        table = self.tensors["item_embeddings.weight"]  # (K, N, D)
        K, B, S = slates.shape
        emb = table.reshape(-1, self.item_dim).index_select(0, (slates + self.offsets).reshape(-1))
        x = torch.cat([emb.view(K, B, S * self.item_dim), clicks], dim=2)
        return self._mlp(ENCODER_LAYERS, x, relu_last=False).chunk(2, dim=2)

    def decode_trunk(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (K, B, latent) → slot queries (K, B·slate, item_dim) and click logits (K, B, slate): the part
        of GeMS.decode before the item scores (those are `_SlotCrossEntropy`'s)."""
        h = self._mlp(DECODER_LAYERS, z, relu_last=True)
        queries = self._linear("slate_head", h).view(z.shape[0], -1, self.item_dim)
        return queries, self._linear("click_head", h)

    def terms(self, slates: Tensor, clicks: Tensor, lambda_click: float, lambda_KL: float,
              noise: Tensor | None) -> dict[str, Tensor]:
        """Each member's negative ELBO (docs §2 eq. (1)) and its terms, each (K,): "total", "slate_ce",
        "click_bce", "kl". `noise` (K, B, latent) standard normal draws; None decodes from z = mu (the
        reference's validation loss)."""
        mu, logvar = self.encode(slates, clicks)
        z = mu if noise is None else reparameterise(mu, logvar, noise, self.reparam_noise)
        queries, click_logits = self.decode_trunk(z)
        K = slates.shape[0]
        # the item table detached, as in GeMS.decode: the table learns only through the encoder
        slate_ce = _SlotCrossEntropy.apply(queries, self.tensors["item_embeddings.weight"].detach(), slates.view(K, -1),
                                           self._scores_buffer)
        click_bce = F.binary_cross_entropy_with_logits(click_logits, clicks, reduction="none").view(K, -1).mean(1)
        kl = gaussian_kl_to_standard_normal(mu, logvar)
        total = slate_ce + lambda_click * click_bce + lambda_KL * kl
        return {"total": total, "slate_ce": slate_ce, "click_bce": click_bce, "kl": kl}

    @torch.no_grad()
    def accuracies(self, slates: Tensor, clicks: Tensor) -> dict[str, Tensor]:
        """(K,) accuracies decoding from z = mu: the argmax item of each slot, and the click bit of each slot."""
        mu, _ = self.encode(slates, clicks)
        queries, click_logits = self.decode_trunk(mu)
        items = torch.bmm(queries, self.tensors["item_embeddings.weight"].transpose(1, 2)).argmax(2).view_as(slates)
        return {"slate_accuracy": (items == slates).float().flatten(1).mean(1),
                "click_accuracy": ((click_logits > 0).float() == clicks).float().flatten(1).mean(1)}


class _SlotCrossEntropy(torch.autograd.Function):
    """(K,) member means of cross_entropy(queries[k] @ table[k]ᵀ, targets[k]) with the gradient w.r.t. the
    queries only (the table is the detached item table); why it is written out: docs §2 "The slot
    cross-entropy". The scores become the softmax in place, kept for the backward (grad = (softmax − one-hot)
    · table / rows); they are one `mm` per member into a block kept between steps (`_scores_buffer`), faster
    than one CPU `bmm` at these shapes (BENCHMARKS.md, "Kernel notes: pretrain")."""

    @staticmethod
    def forward(ctx, queries: Tensor, table: Tensor, targets: Tensor,
                scores_buffer: Callable[[tuple[int, int, int], Tensor], Tensor]) -> Tensor:
        K, R, _ = queries.shape
        scores = scores_buffer((K, R, table.shape[1]), queries)
        table_t = table.transpose(1, 2).contiguous()
        for k in range(K):
            torch.mm(queries[k], table_t[k], out=scores[k])
        picked = scores.gather(2, targets.unsqueeze(2)).squeeze(2)
        top = scores.amax(dim=2, keepdim=True)
        probs = scores.sub_(top).exp_()  # in place: the scores become the softmax
        total = probs.sum(dim=2, keepdim=True)
        probs.div_(total)
        loss = (total.log() + top).squeeze(2).sub_(picked).mean(dim=1)
        ctx.save_for_backward(probs, table_t, targets)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        probs, table_t, targets = ctx.saved_tensors
        probs.scatter_add_(2, targets.unsqueeze(2), probs.new_full((*targets.shape, 1), -1.0))  # softmax − one-hot
        # (tableᵀ · (softmax − one-hot)ᵀ)ᵀ: the same product as (softmax − one-hot) · table, in the operand
        # order the CPU matmul runs faster for these shapes (BENCHMARKS.md, "Kernel notes: pretrain").
        grad_queries = torch.bmm(table_t, probs.transpose(1, 2)).transpose(1, 2)
        grad_queries = grad_queries.mul((grad / probs.shape[1]).view(-1, 1, 1))
        return grad_queries, None, None, None


def stack_logged(parts: list[tuple[Tensor, Tensor]], num_items: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The members' (slates, clicks), each (rows, slate), as two (K, rows, slate) tensors on the device in
    compact dtypes, widened per batch (BENCHMARKS.md, "Kernel notes: pretrain chunks and dtypes"): item ids
    in the narrowest integer type that holds them; clicks uint8 when every click is 0 or 1 (exact), else float32."""
    ids = torch.int16 if num_items <= 2**15 else torch.int32 if num_items <= 2**31 else torch.int64
    binary = all(bool(((clicks == 0) | (clicks == 1)).all()) for _, clicks in parts)
    return (torch.stack([slates.to(ids) for slates, _ in parts]).to(device),
            torch.stack([clicks.to(torch.uint8 if binary else torch.float32) for _, clicks in parts]).to(device))


def member_rows(rows: Tensor, index: Tensor) -> Tensor:
    """(K, R, slate) stacked rows, (K, B) per-member row ids → (K, B, slate), one gather on the device."""
    K, R, S = rows.shape
    offsets = (torch.arange(K, device=rows.device) * R).view(K, 1)
    return rows.reshape(K * R, S).index_select(0, (index + offsets).reshape(-1)).view(K, -1, S)


def member_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> Tensor:
    """(K, *shape) standard normal noise, member k's rows drawn in place from its own generator (a solo
    run's `randn(shape)` on that generator: same kernel, same draws)."""
    out = torch.empty(len(generators), *shape, device=device)
    for generator, rows in zip(generators, out.unbind(0)):
        rows.normal_(generator=generator)
    return out
