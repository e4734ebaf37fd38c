"""Pretraining the GeMS of several members (envs, seeds) as one stacked population, in lockstep.

Member k of a stacked run is its solo `train_gems` run (same data, config and seed) up to float
rounding of batched versus unbatched kernels:

- **Initial weights**: the member's GeMS is built exactly as the solo run builds it, under
  `seeded(seed, device)` (the global CPU generator seeded, the module initialised on the CPU). Its weights
  are then stacked along a leading member dimension under the solo state-dict keys (`_StackedGeMS`).
- **Sampling noise**: the solo run draws `randn(B, latent)` per batch from the global generator of the
  device after the initialisation. On the CPU the member's noise generator takes the global CPU state
  left after its initialisation (it continues the solo stream); on CUDA it is a CUDA generator seeded with
  the seed (what `seeded` left there, which the CPU initialisation does not touch). Each member's rows of
  the (K, B, latent) noise are filled in place by `normal_` on its own generator: the same draws.
- **Batch order**: each member's epoch order is drawn from its own CPU generator seeded with the seed
  (`epoch_order`, as the solo run), stacked and moved to the device once per epoch.
- **Update**: the loss is the sum over members of each member's solo loss (each a mean over its own
  batch). Member k's loss depends only on slice k of the stacked tensors, so the gradient w.r.t. slice k
  is member k's gradient; Adam is elementwise and the members of a stack step together (one shared step
  count), so one `torch.optim.Adam` (same class and settings as the solo run's) over the stacked tensors
  is K solo Adams.
- **Validation / best epoch**: per member, every epoch, in the solo order (file order, batches of
  `batch_size`, decoded from z = mu); each member keeps the weights of its own best-validation epoch.
- **Result**: per member exactly what `train_gems` returns: the model on the CPU in eval mode and the
  metrics dict with the same keys (`cuda_graph` is False: the stacked step is not captured).

Members with different numbers of training or validation rows, or different settings: a stack needs
equal batch shapes and one Adam step count, so `stack_groups` groups the members that can share a stack
(equal config apart from `max_slates`, equal slate size, equal training and validation rows) and
`train_gems_population` trains the groups one after another. Why not mask members whose epoch ends
earlier: a masked member would still need its own Adam step count (no shared `torch.optim.Adam`) and its
last, smaller batch would not fit the stack's shapes, while the use that matters — every env's GeMS from
one logged-data setting (`pretrain gems --env all`) — gives equal sizes: one stack.

Device: written for any device, like `train_gems`: the logged rows are moved to the device once (compact
dtypes), batches are gathered there, and nothing is read back per batch (training and validation losses of
all members are read once per epoch). The stacked step is run eagerly: no CUDA graph capture (the stack
already amortises the per-kernel launch cost over K members). The layers are written as batched matmuls
here rather than with `slatectl.agents.stacked`'s helpers: pretrain may not import agents
(docs/architecture.md, dependency rules).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from slatectl.harness import seeded, torch_device
from slatectl.pretrain.divergence import require_finite_losses
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.gems_train import (BatchCallback, FitOutcome, GeMSConfig, build_gems, epoch_order,
                                          final_metrics, split_logged)

#: (member index in the stack's input order, the epoch row of `train_gems`'s progress callback)
MemberProgressCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class GeMSMember:
    """One member: its logged slates/clicks ((E, H, K) or (M, K), as `train_gems` takes), config and seed."""

    slates: Tensor
    clicks: Tensor
    config: GeMSConfig
    seed: int


def _stack_key(member: GeMSMember) -> tuple:
    """What members of one stack share: the config except `max_slates` (it only sets the row counts),
    the slate size and the training/validation row counts."""
    (train_slates, _), (val_slates, _) = split_logged(member.slates, member.clicks, member.config)
    return (dataclasses.replace(member.config, max_slates=None), train_slates.shape[1], train_slates.shape[0],
            val_slates.shape[0])


def stack_groups(members: Sequence[GeMSMember]) -> list[list[int]]:
    """The members' indices grouped into stacks (members that can train in lockstep), in first-seen order.
    Raises ValueError on a member whose data or config `train_gems` would reject."""
    groups: dict[tuple, list[int]] = {}
    for index, member in enumerate(members):
        groups.setdefault(_stack_key(member), []).append(index)
    return list(groups.values())


def train_gems_population(members: Sequence[GeMSMember],
                          progress_callback: MemberProgressCallback | None = None,
                          batch_callback: BatchCallback | None = None) -> list[tuple[GeMS, dict[str, Any]]]:
    """Every member trained as its solo `train_gems` run would, stack by stack (`stack_groups`); one
    (model, metrics) per member in the input order. Callbacks get member indices in the input order."""
    results: list[tuple[GeMS, dict[str, Any]] | None] = [None] * len(members)
    for group in stack_groups(members):
        member_progress = None
        if progress_callback is not None:
            member_progress = lambda k, row, group=group: progress_callback(group[k], row)  # noqa: E731
        trained = train_stacked_gems([members[i] for i in group], member_progress, batch_callback)
        for index, result in zip(group, trained):
            results[index] = result
    return [r for r in results if r is not None]


def train_stacked_gems(members: Sequence[GeMSMember],
                       progress_callback: MemberProgressCallback | None = None,
                       batch_callback: BatchCallback | None = None) -> list[tuple[GeMS, dict[str, Any]]]:
    """One stack: members that share a stack key (ValueError otherwise); see the module docstring."""
    if not members:
        raise ValueError("a stack needs at least one member")
    if len({_stack_key(m) for m in members}) != 1:
        raise ValueError("members of one stack need equal settings (apart from max_slates), slate sizes and row counts")
    splits = [split_logged(m.slates, m.clicks, m.config) for m in members]
    config = members[0].config
    slate_size = splits[0][0][0].shape[1]
    device = torch_device(config.accelerator)
    models, noise = _initial_models(members, slate_size, device)
    shuffles = [torch.Generator().manual_seed(m.seed) if config.shuffle else None for m in members]
    train = (_stack_rows([s[0][0] for s in splits], config.num_items, device),
             _stack_clicks([s[0][1] for s in splits], device))
    val = (_stack_rows([s[1][0] for s in splits], config.num_items, device),
           _stack_clicks([s[1][1] for s in splits], device))
    with torch.enable_grad():
        stack = _StackedGeMS(models, device)
        outcomes = _fit(stack, train, val, config, noise, shuffles, progress_callback, batch_callback)

    results = []
    for k, (model, outcome, split) in enumerate(zip(models, outcomes, splits)):
        model.load_state_dict(outcome.best_state if outcome.best_state is not None else stack.member_state_dict(k))
        model.eval()
        (train_slates, _), (val_slates, val_clicks) = split
        metrics = final_metrics(model, outcome, config, val_slates, val_clicks, n_train=train_slates.shape[0])
        metrics["cuda_graph"] = False
        results.append((model, metrics))
    return results


def _initial_models(members: Sequence[GeMSMember], slate_size: int,
                    device: torch.device) -> tuple[list[GeMS], list[torch.Generator]]:
    """Each member's initial GeMS (on the CPU) and sampling-noise generator, as its solo run draws them."""
    models, noise = [], []
    for member in members:
        with seeded(member.seed, device):
            models.append(build_gems(member.config, slate_size))
            noise.append(_noise_generator(member.seed, device))
    return models, noise


def _noise_generator(seed: int, device: torch.device) -> torch.Generator:
    """Called inside `seeded(seed, device)` right after the member's initialisation: the generator the
    solo run's sampling noise would come from, at the state it would be in (see the module docstring)."""
    if device.type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device=device).manual_seed(seed)


def _stack_rows(parts: list[Tensor], num_items: int, device: torch.device) -> Tensor:
    """(K, rows, slate) item ids on the device in the narrowest integer type that holds them (int16 for
    1,000 items: six reference-size logs take 1.1 GB, not 4.3 GB in int64); widened per batch."""
    dtype = torch.int16 if num_items <= 2**15 else torch.int32 if num_items <= 2**31 else torch.int64
    return torch.stack([p.to(dtype) for p in parts]).to(device)


def _stack_clicks(parts: list[Tensor], device: torch.device) -> Tensor:
    """(K, rows, slate) clicks on the device: uint8 when every click is 0 or 1 (exact), float32 otherwise."""
    binary = all(bool(((p == 0) | (p == 1)).all()) for p in parts)
    return torch.stack([p.to(torch.uint8 if binary else torch.float32) for p in parts]).to(device)


class _StackedGeMS:
    """The K members' GeMS weights stacked (K, …) under the solo keys, and the GeMS loss for all members.

    Every layer is one batched matmul for all members (`baddbmm` over (K, rows, in), the Linear weights
    held as (K, in, out); `member_state_dict` and `member_gradients` give them back in the solo layout);
    the item lookup reads the K item tables laid end to end (member k's ids offset by k·N)."""

    def __init__(self, models: list[GeMS], device: torch.device):
        reference = models[0]
        self.num_items, self.slate_size, self.item_dim = reference.num_items, reference.slate_size, reference.item_dim
        self.reparam_noise = reference.reparam_noise
        states = [m.state_dict() for m in models]
        # Linear weights are held transposed, (K, in, out): x @ W then reads W row-major and the weight
        # gradient xᵀ·δ comes out in that layout (no transposed operands in the backward's matmuls).
        self.transposed = {name for name, value in states[0].items() if name.endswith(".weight") and
                           not name.startswith("item_embeddings")}
        self.tensors: dict[str, Tensor] = {
            name: self._layout(name, torch.stack([s[name].detach() for s in states])).to(device).requires_grad_(True)
            for name in states[0]}
        self.encoder = [name for name in ("encoder.0", "encoder.2", "encoder.4")]
        self.decoder = [name for name in ("decoder.0", "decoder.2")]
        self.offsets = (torch.arange(len(models), device=device) * self.num_items).view(-1, 1, 1)
        self._scores: Tensor | None = None

    def _scores_buffer(self, shape: tuple[int, int, int], like: Tensor) -> Tensor:
        """The (K, B·slate, N) item-score block of `_SlotCrossEntropy`, one buffer kept between steps.

        Why: at K = 6 the block is 61 MB, above glibc's largest mmap threshold, so a fresh one is mapped
        and page-faulted in at every step (the scores' products measured 35 ms instead of 15 ms per step
        on one thread). Safe because a step's backward runs before the next loss is computed (autograd's
        version check would refuse a saved block overwritten before its backward)."""
        numel = shape[0] * shape[1] * shape[2]
        if self._scores is None or self._scores.numel() < numel or self._scores.dtype != like.dtype:
            self._scores = like.new_empty(numel)
        return self._scores[:numel].view(shape)

    def parameters(self) -> list[Tensor]:
        return list(self.tensors.values())

    def _layout(self, name: str, value: Tensor) -> Tensor:
        """A stacked (K, …) state-dict tensor in the stack's layout, or back (the transpose is its own inverse)."""
        return value.transpose(-1, -2).contiguous() if name in self.transposed else value

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's weights as its solo GeMS state dict (on the CPU)."""
        return {name: self._layout(name, t[k:k + 1].detach()).squeeze(0).to("cpu").clone()
                for name, t in self.tensors.items()}

    def member_gradients(self, k: int) -> dict[str, Tensor]:
        """Member k's gradients, keyed and shaped as its solo GeMS parameters."""
        return {name: self._layout(name, t.grad[k:k + 1]).squeeze(0) for name, t in self.tensors.items()
                if t.grad is not None}

    def _linear(self, name: str, x: Tensor) -> Tensor:
        weight, bias = self.tensors[f"{name}.weight"], self.tensors[f"{name}.bias"]
        return torch.baddbmm(bias.unsqueeze(1), x, weight)

    def _mlp(self, names: list[str], x: Tensor, relu_last: bool) -> Tensor:
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
        return self._mlp(self.encoder, x, relu_last=False).chunk(2, dim=2)

    def decode_trunk(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (K, B, latent) → slot queries (K, B·slate, item_dim) and click logits (K, B, slate): the part
        of GeMS.decode before the item scores (those are `_SlotCrossEntropy`'s)."""
        h = self._mlp(self.decoder, z, relu_last=True)
        queries = self._linear("slate_head", h).view(z.shape[0], -1, self.item_dim)
        return queries, self._linear("click_head", h)

    def losses(self, slates: Tensor, clicks: Tensor, config: GeMSConfig, noise: Tensor | None) -> Tensor:
        """(K,) member losses: each member's GeMS.loss total (means over its own rows); z = mu without noise."""
        mu, logvar = self.encode(slates, clicks)
        if noise is None:
            z = mu
        else:
            scale = logvar.exp() if self.reparam_noise == "variance" else (0.5 * logvar).exp()
            z = mu + noise * scale
        queries, click_logits = self.decode_trunk(z)
        K = slates.shape[0]
        # The item table is detached: the reconstruction loss does not move it (GeMS.decode).
        slate_ce = _SlotCrossEntropy.apply(queries, self.tensors["item_embeddings.weight"].detach(), slates.view(K, -1),
                                           self._scores_buffer)
        click_bce = F.binary_cross_entropy_with_logits(click_logits, clicks, reduction="none").view(K, -1).mean(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).view(K, -1).mean(1)
        return slate_ce + config.lambda_click * click_bce + config.lambda_KL * kl


class _SlotCrossEntropy(torch.autograd.Function):
    """(K,) member means of cross_entropy(queries[k] @ table[k]ᵀ, targets[k]) with the gradient w.r.t. the
    queries only (the table is the detached item table).

    Same value as `F.cross_entropy` of GeMS.loss up to rounding, written out because on the CPU the
    (K, B·slate, N) item scores are most of a step's memory traffic: the scores are turned into the softmax
    in place and kept for the backward (grad = (softmax − one-hot) · table / rows), instead of autograd's
    scores, log-softmax, zero-filled NLL gradient and log-softmax backward (measured 1.4× faster at
    K = 6 on one thread). The scores are one `mm` per member into a block kept between steps
    (`_StackedGeMS._scores_buffer`): the CPU `bmm` of these shapes ((2560 × 20) · (20 × 1000) per
    member) measured about 2× slower."""

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
        # order the CPU matmul runs faster for these shapes (12.6 against 19 ms at K = 6, one thread).
        grad_queries = torch.bmm(table_t, probs.transpose(1, 2)).transpose(1, 2)
        grad_queries = grad_queries.mul((grad / probs.shape[1]).view(-1, 1, 1))
        return grad_queries, None, None, None


def _member_rows(rows: Tensor, index: Tensor) -> Tensor:
    """(K, R, slate) stacked rows, (K, B) per-member row ids → (K, B, slate), one gather on the device."""
    K, R, S = rows.shape
    offsets = (torch.arange(K, device=rows.device) * R).view(K, 1)
    return rows.reshape(K * R, S).index_select(0, (index + offsets).reshape(-1)).view(K, -1, S)


def _member_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> Tensor:
    """(K, *shape) standard normal noise, member k's rows drawn in place from its own generator (the solo
    run's `randn(shape)`: same kernel, same draws)."""
    out = torch.empty(len(generators), *shape, device=device)
    for generator, rows in zip(generators, out.unbind(0)):
        rows.normal_(generator=generator)
    return out


@torch.no_grad()
def _validation_losses(stack: _StackedGeMS, slates: Tensor, clicks: Tensor, config: GeMSConfig) -> Tensor:
    """(K,) mean validation losses (z = mu), batches of `batch_size` in file order as the solo run."""
    total = torch.zeros(slates.shape[0], device=slates.device)
    for start in range(0, slates.shape[1], config.batch_size):
        s = slates[:, start:start + config.batch_size].long()
        c = clicks[:, start:start + config.batch_size].float()
        total += stack.losses(s, c, config, noise=None) * s.shape[1]
    return total / slates.shape[1]


def _fit(stack: _StackedGeMS, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], config: GeMSConfig,
         noise: list[torch.Generator], shuffles: list[torch.Generator | None],
         progress_callback: MemberProgressCallback | None, batch_callback: BatchCallback | None) -> list[FitOutcome]:
    (train_slates, train_clicks), (val_slates, val_clicks) = train, val
    K, rows, device = train_slates.shape[0], train_slates.shape[1], train_slates.device
    latent = stack.tensors["encoder.4.bias"].shape[1] // 2
    optimizer = torch.optim.Adam(stack.parameters(), lr=config.lr)
    per_epoch = math.ceil(rows / config.batch_size)
    loss_sum = torch.zeros(K, device=device)
    outcomes = [FitOutcome(history=[]) for _ in range(K)]
    for epoch in range(config.max_epochs):
        loss_sum.zero_()
        orders = torch.stack([epoch_order(rows, g, torch.device("cpu")) for g in shuffles]).to(device)
        for done, index in enumerate(orders.split(config.batch_size, dim=1), start=1):
            slates = _member_rows(train_slates, index).long()
            clicks = _member_rows(train_clicks, index).float()
            losses = stack.losses(slates, clicks, config, _member_noise(noise, (index.shape[1], latent), device))
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            loss_sum.add_(losses.detach() * index.shape[1])
            if batch_callback is not None:
                batch_callback(epoch, done, per_epoch)
        # The one host read of the epoch: every member's training and validation loss together.
        val_losses = (_validation_losses(stack, val_slates, val_clicks, config) if val_slates.shape[1]
                      else torch.full((K,), math.nan, device=device))
        train_losses, val_values = torch.stack([loss_sum / max(rows, 1), val_losses]).tolist()
        for k, outcome in enumerate(outcomes):
            row = {"epoch": float(epoch), "train_loss": train_losses[k], "val_loss": val_values[k]}
            require_finite_losses(f"GeMS (member {k})", {"training loss": row["train_loss"], "validation loss": row["val_loss"]},
                                  f"epoch {epoch + 1}", optional=() if val_slates.shape[1] else ("validation loss",))
            if val_slates.shape[1] and row["val_loss"] < outcome.best_val_loss:
                outcome.best_val_loss, outcome.best_epoch = row["val_loss"], epoch
                outcome.best_state = stack.member_state_dict(k)
            outcome.history.append(row)
            if progress_callback is not None:
                progress_callback(k, dict(row))
    return outcomes
