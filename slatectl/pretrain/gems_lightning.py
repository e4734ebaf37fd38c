"""GeMS pretraining as a LightningModule trained by `pytorch_lightning.Trainer` (the default engine of
`train_gems`; docs/algorithms.md §2, docs/lightning.md).

The Trainer owns what it does well: the device (accelerator, one device), the epoch loop and its
hooks, callbacks and loggers. The optimisation itself is the plain loop's (`gems_train._fit`), so a seed
gives the same weights on either engine (tests/test_gems_lightning.py):
- manual optimisation; the step is `gems_train`'s `_EagerStep` (or, on CUDA, its `_CapturedStep`
  replaying a CUDA graph) on the raw Adam optimizer, in the plain loop's order;
- the data stay where `train_gems` put them (on the device, once); each epoch's row order is drawn from
  the same CPU generator at the start of the epoch (`EpochChunks`);
- one `training_step` takes a *chunk* of `chunk_batches` batches: Lightning's per-call work (hooks,
  progress bookkeeping, ~0.1 ms) is paid once per chunk instead of once per batch, and nothing is read
  back per batch (the loss is summed on the device and read once per epoch, as in the plain loop);
- the end of an epoch (`on_train_epoch_end`) reads the training loss, computes the validation loss
  (decoded from z = mu) and keeps a CPU copy of the weights of the best-validation epoch, exactly as the
  plain loop does.

Lightning's `global_step` counts optimizer steps of its own wrapped optimizers; the steps here go to the
raw optimizer (so that a CUDA graph can capture them), so `global_step` stays 0 and `batches_done` counts
the optimizer steps. The stacked population (`gems_population.py`) keeps its own loop: it is K models
with per-member masks and groups, and the Trainer would add nothing it does not already do.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import Tensor

from slatectl.pretrain.divergence import require_finite_losses
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.gems_train import (BatchCallback, FitOutcome, GeMSConfig, ProgressCallback, _CapturedStep,
                                          _EagerStep, _validation_loss, epoch_order)

#: Batches per `training_step`. Lightning's per-call cost is ~0.1 ms against ~5–30 ms per GeMS batch on
#: a CPU; 32 makes it negligible there and keeps launches flowing on CUDA.
CHUNK_BATCHES = 32


class EpochChunks:
    """The training rows of an epoch in chunks of `chunk_batches` batches (one chunk per `training_step`).

    Iterating starts an epoch: the row order is drawn then from the CPU `generator` (or file order when
    it is None), exactly when the plain loop draws it, and moved to the device once."""

    def __init__(self, rows: int, batch_size: int, chunk_batches: int, generator: torch.Generator | None,
                 device: torch.device) -> None:
        self.rows, self.batch_size, self.chunk_batches = rows, batch_size, chunk_batches
        self.generator, self.device = generator, device

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.batches_per_epoch / self.chunk_batches)

    def __iter__(self) -> Iterator[Tensor]:
        """Each chunk is one index tensor of up to chunk_batches × batch_size rows (`training_step`
        splits it into batches): one tensor is all the Trainer has to walk through to move a chunk."""
        order = epoch_order(self.rows, self.generator, self.device)
        yield from order.split(self.chunk_batches * self.batch_size)


class GeMSModule(pl.LightningModule):
    """GeMS and its pretraining schedule (module docstring); `outcome` holds the history and the best epoch."""

    def __init__(self, model: GeMS, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], config: GeMSConfig,
                 seed: int, progress_callback: ProgressCallback | None = None,
                 batch_callback: BatchCallback | None = None, cuda_graph: bool = True,
                 chunk_batches: int = CHUNK_BATCHES) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.config, self.seed, self.cuda_graph = config, seed, cuda_graph
        self.train_rows, self.val_rows = train, val
        self.progress_callback, self.batch_callback = progress_callback, batch_callback
        device = train[0].device
        shuffle = torch.Generator().manual_seed(seed) if config.shuffle else None
        self.chunks = EpochChunks(train[0].shape[0], config.batch_size, chunk_batches, shuffle, device)
        self.loss_sum = torch.zeros((), device=device)  # updated in place: a captured step keeps its address
        self.outcome = FitOutcome(history=[])
        self.step_fn: Callable[[Tensor], None] | None = None
        self.batches_done = 0
        self._epoch_batches = 0

    def capture(self) -> bool:
        return self.cuda_graph and self.loss_sum.device.type == "cuda"

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.lr, capturable=self.capture())

    def train_dataloader(self) -> EpochChunks:
        return self.chunks

    def on_train_start(self) -> None:
        optimizer = self.optimizers().optimizer  # the raw Adam: the step is the plain loop's
        step: Callable[[Tensor], None] = _EagerStep(self.model, optimizer, self.train_rows, self.config, self.loss_sum)
        if self.capture():
            step = _CapturedStep(step, self.config.batch_size, self.loss_sum.device)
        self.step_fn = self.outcome.step = step

    def on_train_epoch_start(self) -> None:
        self.model.train()
        self.loss_sum.zero_()
        self._epoch_batches = 0

    def training_step(self, chunk: Tensor, chunk_index: int) -> None:
        batches = chunk.split(self.config.batch_size)
        for index in batches:
            self.step_fn(index)
            self._epoch_batches += 1
            if self.batch_callback is not None:
                self.batch_callback(self.current_epoch, self._epoch_batches, self.chunks.batches_per_epoch)
        self.batches_done += len(batches)

    def on_train_epoch_end(self) -> None:
        # The one host read of the epoch's training (it waits for the device to finish the epoch).
        rows = self.chunks.rows
        row = {"epoch": float(self.current_epoch), "train_loss": (self.loss_sum / max(rows, 1)).item(),
               "val_loss": math.nan}
        val_slates, val_clicks = self.val_rows
        if val_slates.shape[0]:
            row["val_loss"] = _validation_loss(self.model, val_slates, val_clicks, self.config)
            if row["val_loss"] < self.outcome.best_val_loss:
                self.outcome.best_val_loss, self.outcome.best_epoch = row["val_loss"], self.current_epoch
                self.outcome.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        require_finite_losses("GeMS", {"training loss": row["train_loss"], "validation loss": row["val_loss"]},
                              f"epoch {self.current_epoch + 1}", optional=() if val_slates.shape[0] else ("validation loss",))
        self.outcome.history.append(row)
        if self.progress_callback is not None:
            self.progress_callback(dict(row))


def fit_with_trainer(model: GeMS, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], config: GeMSConfig,
                     seed: int, progress_callback: ProgressCallback | None, batch_callback: BatchCallback | None,
                     cuda_graph: bool, chunk_batches: int = CHUNK_BATCHES) -> FitOutcome:
    """`gems_train._fit`'s contract, run by a Lightning Trainer on the device the data are on."""
    module = GeMSModule(model, train, val, config, seed, progress_callback, batch_callback, cuda_graph, chunk_batches)
    fit_quietly(module, train[0].device, config.max_epochs)
    return module.outcome


def fit_quietly(module: pl.LightningModule, device: torch.device, max_epochs: int) -> None:
    """Train `module` with a Trainer on `device` that logs, checkpoints, validates and prints nothing of its
    own: the pretraining modules keep their own best epoch, progress and validation (GeMS and MF)."""
    with quiet_lightning():
        trainer = pl.Trainer(accelerator=device.type, devices=[device.index or 0] if device.type == "cuda" else 1,
                             max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0)
        trainer.fit(module)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's start-up notes ("GPU available: …", tips) go to its loggers at INFO; slatectl's own
    progress lines are the command's output, so they are held back to warnings while the Trainer runs.
    Lightning 2.6's batch flattening trips torch's LeafSpec deprecation on every fit: not ours to fix."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
