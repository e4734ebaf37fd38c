"""Pretraining GeMS on logged slates with PyTorch Lightning (docs/algorithms.md §2).

Reference schedule: first 10 % of the logged episodes are validation, the rest training, flattened to
single slates; batch 256; Adam 1e-3; `max_epochs` epochs (15 in pretrain_GeMS.yml); the weights of the
epoch with the lowest validation loss (decoded from z = mu) are kept.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from slatectl.pretrain.data import check_logged_pair, num_validation
from slatectl.pretrain.gems import GeMS

ProgressCallback = Callable[[dict[str, float]], None]
BatchCallback = Callable[[int, int, int], None]  # (epoch, batches done in it, batches per epoch)


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
    accelerator: str = "cpu"

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
        if self.lr <= 0 or self.lambda_click < 0 or self.lambda_KL < 0:
            raise ValueError("lr must be > 0 and the loss weights >= 0")

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


class _SlateRows(Dataset):
    """Rows of (slate, clicks) fetched a whole batch at a time (one fancy-index per batch, not 256
    per-item calls: the reference data has 9 M training slates)."""

    def __init__(self, slates: Tensor, clicks: Tensor) -> None:
        self.slates = slates
        self.clicks = clicks

    def __len__(self) -> int:
        return self.slates.shape[0]

    def __getitem__(self, rows: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return self.slates[idx].long(), self.clicks[idx].float()


def _loader(slates: Tensor, clicks: Tensor, batch_size: int, shuffle: bool, generator: torch.Generator) -> DataLoader:
    rows = _SlateRows(slates, clicks)
    order = RandomSampler(rows, generator=generator) if shuffle else SequentialSampler(rows)
    return DataLoader(rows, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def _split_logged(slates: Tensor, clicks: Tensor, config: GeMSConfig) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
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


# -- lightning ----------------------------------------------------------------------------------------


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


class GeMSLightning(pl.LightningModule):
    """Lightning wrapper: one optimiser step per batch of slates; tracks the best validation epoch."""

    def __init__(self, model: GeMS, config: GeMSConfig, progress_callback: ProgressCallback | None = None,
                 batch_callback: BatchCallback | None = None) -> None:
        super().__init__()
        self.batch_callback = batch_callback
        self.model = model
        self.config = config
        self.progress_callback = progress_callback
        self.history: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, Tensor] | None = None
        self._train_sum = torch.zeros(())
        self._train_count = 0
        self._val = _ValidationTotals()
        self._val_means: dict[str, float] = {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        slates, clicks = batch
        losses = self.model.loss(slates, clicks, self.config.lambda_click, self.config.lambda_KL, sample=True)
        # Kept as a tensor: calling .item() every step would force a sync on GPU.
        self._train_sum = self._train_sum.to(losses["total"].device) + losses["total"].detach() * slates.shape[0]
        self._train_count += slates.shape[0]
        return losses["total"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.batch_callback is not None:
            self.batch_callback(self.current_epoch, batch_idx + 1, int(self.trainer.num_training_batches))

    def on_validation_epoch_start(self) -> None:
        self._val = _ValidationTotals()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        slates, clicks = batch
        losses = self.model.loss(slates, clicks, self.config.lambda_click, self.config.lambda_KL, sample=False)
        self._val.add(slates.shape[0], {f"val_{k}": v.item() for k, v in losses.items()})

    def on_validation_epoch_end(self) -> None:
        self._val_means = self._val.means()
        val_loss = self._val_means["val_total"]
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.best_epoch = self.current_epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def on_train_epoch_end(self) -> None:
        # Lightning 2.x runs the epoch's validation before this hook, so both losses are known here.
        train_loss = (self._train_sum / max(self._train_count, 1)).item()
        self._train_sum, self._train_count = torch.zeros(()), 0
        row = {"epoch": float(self.current_epoch), "train_loss": train_loss}
        row["val_loss"] = self._val_means.get("val_total", math.nan)
        self.history.append(row)
        if self.progress_callback is not None:
            self.progress_callback(dict(row))


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banner and the single-process dataloader hints (we load in-process on
    purpose: batches are slices of in-memory tensors)."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning-internal deprecation
            warnings.filterwarnings("ignore", message=".*have no `val_dataloader`.*")  # val_fraction = 0
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def train_gems(
    slates: Tensor,
    clicks: Tensor,
    config: GeMSConfig,
    seed: int,
    progress_callback: ProgressCallback | None = None,
    batch_callback: BatchCallback | None = None,
) -> tuple[GeMS, dict[str, Any]]:
    """Train GeMS on logged slates; return the best-validation model (CPU, eval mode) and metrics.

    slates/clicks: (E, H, K) logged episodes or (M, K) slates, episode-major. The global torch RNG is
    seeded inside a forked RNG state, so the caller's RNG is left untouched and a seed fully fixes the
    result (on CPU).
    """
    (train_slates, train_clicks), (val_slates, val_clicks) = _split_logged(slates, clicks, config)
    slate_size = train_slates.shape[1]
    # enable_grad: independent of a global grad mode the caller left off (simulator rollouts do).
    with torch.random.fork_rng(devices=[]), _quiet_lightning(), torch.enable_grad():
        torch.manual_seed(seed)
        model = build_gems(config, slate_size)
        module = GeMSLightning(model, config, progress_callback, batch_callback)
        shuffle_gen = torch.Generator().manual_seed(seed)
        train_loader = _loader(train_slates, train_clicks, config.batch_size, config.shuffle, shuffle_gen)
        val_loader = (
            _loader(val_slates, val_clicks, config.batch_size, False, shuffle_gen) if val_slates.shape[0] else None
        )
        trainer = pl.Trainer(
            max_epochs=config.max_epochs,
            accelerator=config.accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if val_loader is not None else 0,
        )
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)

    model = module.model.cpu()
    if module.best_state is not None:
        model.load_state_dict(module.best_state)
    model.eval()
    metrics = _final_metrics(model, module, val_slates, val_clicks, n_train=train_slates.shape[0])
    return model, metrics


@torch.no_grad()
def _final_metrics(model: GeMS, module: GeMSLightning, val_slates: Tensor, val_clicks: Tensor, n_train: int) -> dict[str, Any]:
    history = module.history
    kept = module.best_epoch if module.best_epoch >= 0 else len(history) - 1
    metrics: dict[str, Any] = {
        "epochs_run": len(history),
        "best_epoch": kept,
        "train_loss": history[-1]["train_loss"] if history else math.nan,
        "train_loss_best_epoch": history[kept]["train_loss"] if history else math.nan,
        "val_loss": module.best_val_loss if module.best_state is not None else math.nan,
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
            losses = model.loss(s, c, module.config.lambda_click, module.config.lambda_KL, sample=False)
            values = {f"val_{k}": v.item() for k, v in losses.items() if k != "total"}
            values.update({f"val_{k}": v for k, v in reconstruction_scores(model, s, c).items()})
            totals.add(s.shape[0], values)
        metrics.update(totals.means())
    else:
        metrics.update({k: math.nan for k in ("val_slate_ce", "val_click_bce", "val_kl", "val_slate_accuracy", "val_click_accuracy")})
    return metrics
