"""Pretraining GeMS on logged slates (docs/algorithms.md §2): the step, the plain PyTorch loop
(`slatectl.harness`) and `train_gems`, which runs the epochs on a Lightning Trainer by default
(`gems_lightning.py`, the same step and the same weights) or on the plain loop (`engine="loop"`).

Reference schedule: first 10 % of the logged episodes are validation, the rest training, flattened to
single slates; batch 256; Adam 1e-3; `max_epochs` epochs (15 in pretrain_GeMS.yml); the weights of the
epoch with the lowest validation loss (decoded from z = mu) are kept.

The loop runs on `accelerator` (cpu | cuda) and is written for the device's limit, not the framework's:
- the logged slates are moved to the device once; each epoch's row order is drawn on the CPU generator
  (the same draws on every device) and moved once; a batch is a slice of it, gathered on the device;
- nothing is read back per batch: the training loss accumulates on the device and is read once per
  epoch, with the validation loss (tests/test_gems.py counts the host reads);
- on CUDA the full-batch training step is recorded once as a CUDA graph and replayed (`cuda_graph`,
  on by default there): a batch is then two launches instead of ~150 kernel launches from Python,
  which is what bounded an eager CUDA loop (~290 batches/s on an H200 for ~1 GFLOP per batch). The CPU
  has no graphs and nothing to gain (its step is compute-bound), so there the step stays eager.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from slatectl.harness import capture_cuda_graph, seeded, torch_device
from slatectl.pretrain.data import check_logged_pair, num_validation
from slatectl.pretrain.divergence import require_finite_losses
from slatectl.pretrain.gems import GeMS

ProgressCallback = Callable[[dict[str, float]], None]
BatchCallback = Callable[[int, int, int], None]  # (epoch, batches done in it, batches per epoch)
#: Set to "0" to run the CUDA training step eagerly instead of replaying a captured CUDA graph.
CUDA_GRAPH_ENV = "SLATECTL_GEMS_CUDA_GRAPH"


@dataclass(frozen=True)
class GeMSConfig:
    """GeMS pretraining settings; defaults = the reference pretrain_GeMS.yml (see docs §2)."""

    latent_dim: int = 32
    lambda_click: float = 0.5
    lambda_KL: float = 1.0
    # The reference's prior regulariser is identically zero; only 0.0 is accepted so that a non-zero
    # value cannot silently do nothing.
    lambda_prior: float = 0.0
    batch_size: int = 256
    lr: float = 1e-3
    max_epochs: int = 15
    val_fraction: float = 0.1
    max_slates: int | None = None  # use only the first max_slates slates (small runs, tests)
    shuffle: bool = True  # reference: False (file order); see docs §2 "Shuffling"
    reparam_noise: str = "variance"  # reference sampler; "std" for the textbook VAE
    num_items: int = 1000
    item_dim: int = 20
    accelerator: str = "cpu"  # the device: cpu | cuda

    def __post_init__(self) -> None:
        if self.lambda_prior != 0.0:
            raise ValueError("lambda_prior must be 0.0: GeMS uses a fixed N(0, I) prior (reference behaviour)")
        if self.reparam_noise not in ("variance", "std"):
            raise ValueError(f"reparam_noise must be 'variance' or 'std', got {self.reparam_noise!r}")
        for name in ("latent_dim", "batch_size", "max_epochs", "num_items", "item_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_slates is not None and self.max_slates < 2:
            raise ValueError(f"max_slates must be >= 2 or None, got {self.max_slates}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.lr) and self.lr > 0) or not (self.lambda_click >= 0 and self.lambda_KL >= 0):
            raise ValueError("lr must be finite and > 0 and the loss weights >= 0")
        if self.accelerator not in ("cpu", "cuda"):
            raise ValueError(f"accelerator must be cpu or cuda, got {self.accelerator!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_gems(config: GeMSConfig, slate_size: int = 10) -> GeMS:
    return GeMS(
        num_items=config.num_items,
        slate_size=slate_size,
        item_dim=config.item_dim,
        latent_dim=config.latent_dim,
        reparam_noise=config.reparam_noise,  # type: ignore[arg-type]
    )


# -- data ---------------------------------------------------------------------------------------------


def epoch_order(rows: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """One epoch's row order on `device`: a fresh permutation from the CPU `generator`, or file order.

    Drawn on the CPU so that a seed gives the same batch order on every device, then moved in one copy
    (batches are slices of it: no per-batch host-to-device transfer)."""
    if generator is None:
        return torch.arange(rows, device=device)
    return torch.randperm(rows, generator=generator).to(device)


def split_logged(slates: Tensor, clicks: Tensor, config: GeMSConfig) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Flatten (E, H, K) to (E·H, K) if needed, cap at max_slates, hold out the leading val_fraction.

    For episode-major rows the leading rows are the first episodes; with 3-D input the cut is made on
    an episode boundary (unless max_slates cuts inside an episode)."""
    check_logged_pair(slates, clicks, ndim=(2, 3))
    steps_per_episode = slates.shape[1] if slates.ndim == 3 else 1
    slates, clicks = slates.reshape(-1, slates.shape[-1]), clicks.reshape(-1, clicks.shape[-1])
    if config.max_slates is not None:
        slates, clicks = slates[: config.max_slates], clicks[: config.max_slates]
    rows = slates.shape[0]
    if rows % steps_per_episode == 0 and rows // steps_per_episode >= 2:
        n_val = num_validation(rows // steps_per_episode, config.val_fraction) * steps_per_episode
    else:
        n_val = num_validation(rows, config.val_fraction)
    if int(slates.max()) >= config.num_items:
        raise ValueError(f"item id {int(slates.max())} >= num_items {config.num_items}")
    return (slates[n_val:], clicks[n_val:]), (slates[:n_val], clicks[:n_val])


# -- training -----------------------------------------------------------------------------------------


class _ValidationTotals:
    """Sums over the validation set, turned into means at the end of the pass."""

    def __init__(self) -> None:
        self.slates = 0
        self.sums: dict[str, float] = {}

    def add(self, n: int, values: dict[str, float]) -> None:
        self.slates += n
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * n

    def means(self) -> dict[str, float]:
        return {key: value / self.slates for key, value in self.sums.items()}


@torch.no_grad()
def reconstruction_scores(model: GeMS, slates: Tensor, clicks: Tensor) -> dict[str, float]:
    """Batch-mean accuracies when decoding from z = mu: exact item per slot, click bit per slot."""
    mu, _ = model.encode(slates, clicks)
    item_logits, click_logits = model.decode(mu)
    return {
        "slate_accuracy": (item_logits.argmax(-1) == slates).float().mean().item(),
        "click_accuracy": ((click_logits > 0).float() == clicks).float().mean().item(),
    }


@dataclass
class FitOutcome:
    history: list[dict[str, float]]
    best_val_loss: float = math.inf
    best_epoch: int = -1
    best_state: dict[str, Tensor] | None = None
    step: Callable[[Tensor], None] | None = None  # the step that ran: eager, or captured (CUDA)


@torch.no_grad()
def _validation_loss(model: GeMS, slates: Tensor, clicks: Tensor, config: GeMSConfig) -> float:
    """Mean validation loss (decoded from z = mu), summed on the device and read once."""
    model.eval()
    total = torch.zeros((), device=slates.device)
    for index in epoch_order(slates.shape[0], None, slates.device).split(config.batch_size):
        s, c = slates[index].long(), clicks[index].float()
        total += model.loss(s, c, config.lambda_click, config.lambda_KL, sample=False)["total"] * s.shape[0]
    return (total / slates.shape[0]).item()


class _EagerStep:
    """One optimiser step on the training rows `index` (a device tensor); adds loss × rows to `loss_sum`."""

    def __init__(self, model: GeMS, optimizer: torch.optim.Optimizer, train: tuple[Tensor, Tensor],
                 config: GeMSConfig, loss_sum: Tensor) -> None:
        self.model, self.optimizer, self.config, self.loss_sum = model, optimizer, config, loss_sum
        self.slates, self.clicks = train

    def __call__(self, index: Tensor) -> None:
        slates, clicks = self.slates[index].long(), self.clicks[index].float()
        loss = self.model.loss(slates, clicks, self.config.lambda_click, self.config.lambda_KL, sample=True)["total"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach() * index.shape[0])


class _CapturedStep:
    """CUDA: the full-batch step recorded once as a CUDA graph, then replayed with new row indices.

    Semantics are the eager step's: the first `WARMUP_STEPS` full batches run eagerly on a side stream
    (capture needs warmed-up kernels and allocator; these are real steps of the schedule), the next
    batch's step is recorded and replayed, and so is every later full batch. The sampling noise comes
    from the CUDA generator, whose graph-safe state advances on every replay. A smaller last batch of an
    epoch runs eagerly (a graph has fixed shapes). Adam must be `capturable` (step counts on the device).
    """

    WARMUP_STEPS = 3

    def __init__(self, eager: _EagerStep, batch_size: int, device: torch.device) -> None:
        self.eager = eager
        self.batch_size = batch_size
        self.index = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_gradients: list[Tensor | None] = []  # the graph's gradient buffers, kept alive
        self.failed: str | None = None  # why capture failed: the step then stays eager
        self.warmed = 0
        self.side_stream = torch.cuda.Stream(device=device)

    @property
    def replaying(self) -> bool:
        return self.graph is not None

    def __call__(self, index: Tensor) -> None:
        if index.shape[0] != self.batch_size or self.failed is not None:
            self.eager(index)
            return
        if self.warmed < self.WARMUP_STEPS:
            self.side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side_stream):
                self.eager(index)
            torch.cuda.current_stream().wait_stream(self.side_stream)
            self.warmed += 1
            return
        self.index.copy_(index)
        if self.graph is None and not self._capture():
            self.eager(index)
            return
        self.graph.replay()

    def _capture(self) -> bool:
        """Record the step; False (and eager from then on) if this torch/GPU cannot capture it. Nothing
        recorded has run, so the eager step can take the batch whose capture failed."""
        self.eager.optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph
        self.graph, self.failed = capture_cuda_graph(lambda: self.eager(self.index), "GeMS pretraining")
        if self.graph is None:
            return False
        # An eager partial batch sets .grad to None; the graph keeps writing these buffers.
        self.graph_gradients = [p.grad for p in self.eager.model.parameters()]
        return True


def _fit(model: GeMS, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], config: GeMSConfig, seed: int,
         progress_callback: ProgressCallback | None, batch_callback: BatchCallback | None,
         cuda_graph: bool) -> FitOutcome:
    device = train[0].device
    capture = cuda_graph and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, capturable=capture)
    shuffle = torch.Generator().manual_seed(seed) if config.shuffle else None
    (train_slates, _), (val_slates, val_clicks) = train, val
    rows = train_slates.shape[0]
    per_epoch = math.ceil(rows / config.batch_size)
    loss_sum = torch.zeros((), device=device)  # updated in place: a captured step keeps its address
    step: Callable[[Tensor], None] = _EagerStep(model, optimizer, train, config, loss_sum)
    if capture:
        step = _CapturedStep(step, config.batch_size, device)
    outcome = FitOutcome(history=[])
    outcome.step = step
    for epoch in range(config.max_epochs):
        model.train()
        loss_sum.zero_()
        for done, index in enumerate(epoch_order(rows, shuffle, device).split(config.batch_size), start=1):
            step(index)
            if batch_callback is not None:
                batch_callback(epoch, done, per_epoch)
        # The one host read of the epoch's training (it waits for the device to finish the epoch).
        row = {"epoch": float(epoch), "train_loss": (loss_sum / max(rows, 1)).item(), "val_loss": math.nan}
        if val_slates.shape[0]:
            row["val_loss"] = _validation_loss(model, val_slates, val_clicks, config)
            if row["val_loss"] < outcome.best_val_loss:
                outcome.best_val_loss, outcome.best_epoch = row["val_loss"], epoch
                outcome.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        require_finite_losses("GeMS", {"training loss": row["train_loss"], "validation loss": row["val_loss"]},
                              f"epoch {epoch + 1}", optional=() if val_slates.shape[0] else ("validation loss",))
        outcome.history.append(row)
        if progress_callback is not None:
            progress_callback(dict(row))
    return outcome


def _fit_with_trainer(*args: Any) -> FitOutcome:
    # Lightning is imported when GeMS trains, not when this module is (compute commands that reuse a
    # registered GeMS never pay its import; docs/architecture.md rule 4).
    from slatectl.pretrain.gems_lightning import fit_with_trainer

    return fit_with_trainer(*args)


#: How the epochs run: "lightning" (a pytorch_lightning.Trainer over `gems_lightning.GeMSModule`) or
#: "loop" (the plain loop `_fit`); both give the same weights for a seed (tests/test_gems_lightning.py).
ENGINES: dict[str, Callable[..., FitOutcome]] = {"lightning": _fit_with_trainer, "loop": _fit}
DEFAULT_ENGINE = "lightning"


def train_gems(
    slates: Tensor,
    clicks: Tensor,
    config: GeMSConfig,
    seed: int,
    progress_callback: ProgressCallback | None = None,
    batch_callback: BatchCallback | None = None,
    cuda_graph: bool | None = None,
    engine: str = DEFAULT_ENGINE,
) -> tuple[GeMS, dict[str, Any]]:
    """Train GeMS on logged slates; return the best-validation model (CPU, eval mode) and metrics.

    slates/clicks: (E, H, K) logged episodes or (M, K) slates, episode-major. The global torch RNG is
    seeded inside a forked RNG state, so the caller's RNG is left untouched and a seed fully fixes the
    result on a given device (CPU runs are bit-reproducible; CUDA runs up to the GPU's nondeterministic
    reductions). `cuda_graph` replays the training step from a CUDA graph on CUDA (ignored on the CPU);
    None reads CUDA_GRAPH_ENV (on unless it is "0"), the switch for runs started from the CLI.
    `batch_callback` is called after each batch is *queued* (on CUDA the device may still be behind).
    `engine`: one of ENGINES (same result; "loop" is kept for comparison and benchmarks).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    (train_slates, train_clicks), (val_slates, val_clicks) = split_logged(slates, clicks, config)
    if cuda_graph is None:
        cuda_graph = os.environ.get(CUDA_GRAPH_ENV, "1") != "0"
    slate_size = train_slates.shape[1]
    device = torch_device(config.accelerator)
    # enable_grad: independent of a global grad mode the caller left off (simulator rollouts do).
    with seeded(seed, device), torch.enable_grad():
        model = build_gems(config, slate_size).to(device)
        train = (train_slates.to(device), train_clicks.to(device))
        val = (val_slates.to(device), val_clicks.to(device))
        outcome = ENGINES[engine](model, train, val, config, seed, progress_callback, batch_callback, cuda_graph)

    model = model.cpu()
    if outcome.best_state is not None:
        model.load_state_dict(outcome.best_state)
    model.eval()
    metrics = final_metrics(model, outcome, config, val_slates, val_clicks, n_train=train_slates.shape[0])
    # Whether full batches were replayed from a CUDA graph (False on the CPU, or if capture failed).
    metrics["cuda_graph"] = isinstance(outcome.step, _CapturedStep) and outcome.step.replaying
    return model, metrics


@torch.no_grad()
def final_metrics(model: GeMS, outcome: FitOutcome, config: GeMSConfig, val_slates: Tensor, val_clicks: Tensor,
                   n_train: int) -> dict[str, Any]:
    history = outcome.history
    kept = outcome.best_epoch if outcome.best_epoch >= 0 else len(history) - 1
    metrics: dict[str, Any] = {
        "epochs_run": len(history),
        "best_epoch": kept,
        "train_loss": history[-1]["train_loss"] if history else math.nan,
        "train_loss_best_epoch": history[kept]["train_loss"] if history else math.nan,
        "val_loss": outcome.best_val_loss if outcome.best_state is not None else math.nan,
        "n_train_slates": n_train,
        "n_val_slates": int(val_slates.shape[0]),
        "history": history,
    }
    if val_slates.shape[0]:
        totals = _ValidationTotals()
        chunk = 2_048  # item logits are chunk x K x N floats: 80 MB here
        for start in range(0, val_slates.shape[0], chunk):
            s = val_slates[start : start + chunk].long()
            c = val_clicks[start : start + chunk].float()
            losses = model.loss(s, c, config.lambda_click, config.lambda_KL, sample=False)
            values = {f"val_{k}": v.item() for k, v in losses.items() if k != "total"}
            values.update({f"val_{k}": v for k, v in reconstruction_scores(model, s, c).items()})
            totals.add(s.shape[0], values)
        metrics.update(totals.means())
    else:
        metrics.update({k: math.nan for k in ("val_slate_ce", "val_click_bce", "val_kl", "val_slate_accuracy", "val_click_accuracy")})
    return metrics
