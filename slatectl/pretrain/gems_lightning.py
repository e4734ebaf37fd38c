"""GeMS pretraining as a LightningModule trained by `pytorch_lightning.Trainer` (the default engine of
`train_gems` and of stacked populations; docs/algorithms.md §2, docs/lightning.md).

The Trainer owns what it does well: the device (accelerator, one device), the epoch loop and its
hooks, callbacks and loggers. The optimisation is `gems_train.GeMSFit`'s, which the plain loop drives
too, so a seed gives the same weights on either engine (tests/test_gems_lightning.py): manual
optimisation of the raw Adam (so that a CUDA graph can capture the step), the data where
`train_stacked_gems` put them (on the device, once), each epoch's row order drawn when the epoch's data
are iterated (`EpochChunks`), and the epoch's end (the one host read, validation, best weights) at
`on_train_epoch_end`. One `training_step` takes a *chunk* of `chunk_batches` batches: Lightning's
per-call work (hooks, progress bookkeeping, ~0.1 ms) is paid once per chunk instead of once per batch.

Lightning's `global_step` counts the steps of its own wrapped optimizers; the steps here go to the raw
optimizer, so `global_step` stays 0 and `GeMSFit.batches_done` counts the optimizer steps.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import Tensor

from slatectl.pretrain.gems_train import GeMSFit

#: Batches per `training_step`. Lightning's per-call cost is ~0.1 ms against ~5–30 ms per GeMS batch on
#: a CPU; 32 makes it negligible there and keeps launches flowing on CUDA.
CHUNK_BATCHES = 32


class EpochChunks:
    """The training rows of an epoch in chunks of `chunk_batches` batches (one chunk per `training_step`).

    Iterating starts an epoch: the members' row order is drawn then (`GeMSFit.epoch_order`), exactly
    when the plain loop draws it. Each chunk is one (K, ≤ chunk_batches × batch_size) index tensor: one
    tensor is all the Trainer has to walk through to move a chunk."""

    def __init__(self, fit: GeMSFit, chunk_batches: int) -> None:
        self.fit, self.chunk_batches = fit, chunk_batches

    def __len__(self) -> int:
        return math.ceil(self.fit.batches_per_epoch / self.chunk_batches)

    def __iter__(self) -> Iterator[Tensor]:
        yield from self.fit.epoch_order().split(self.chunk_batches * self.fit.config.batch_size, dim=1)


class GeMSModule(pl.LightningModule):
    """The epochs of a `GeMSFit` as Lightning hooks."""

    def __init__(self, fit: GeMSFit, chunk_batches: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.fit_, self.chunks = fit, EpochChunks(fit, chunk_batches)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.fit_.optimizer

    def train_dataloader(self) -> EpochChunks:
        return self.chunks

    def on_train_epoch_start(self) -> None:
        self.fit_.begin_epoch()

    def training_step(self, chunk: Tensor, chunk_index: int) -> None:
        for index in chunk.split(self.fit_.config.batch_size, dim=1):
            self.fit_.run_batch(self.current_epoch, index)

    def on_train_epoch_end(self) -> None:
        self.fit_.end_epoch(self.current_epoch)


def fit_with_trainer(fit: GeMSFit) -> None:
    """Run `fit`'s epochs with a Lightning Trainer on the device its data are on."""
    fit_quietly(GeMSModule(fit, CHUNK_BATCHES), fit.device, fit.config.max_epochs)


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
