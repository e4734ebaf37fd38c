"""The default engine of the pretraining fits (`engines.py`): a `pytorch_lightning.Trainer` over `FitModule`
(docs/lightning.md, "Pretraining on Lightning"). The Trainer owns the device and the epoch loop; all else
is the fit's, its optimisation too (manual, on its raw Adam, so that a CUDA graph can capture GeMS's step).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl
import torch

from slatectl.pretrain.engines import ChunkedFit, EpochChunks


class FitModule(pl.LightningModule):
    """The epochs of a `ChunkedFit` as Lightning hooks; a stop (MF's patience or batch cap) stops the Trainer."""

    def __init__(self, fit: ChunkedFit) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.fit_ = fit

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.fit_.optimizer

    def train_dataloader(self) -> EpochChunks:
        return EpochChunks(self.fit_)

    def on_train_epoch_start(self) -> None:
        self.fit_.begin_epoch()

    def training_step(self, chunk: Any, chunk_index: int) -> None:
        if self.fit_.run_chunk(self.current_epoch, chunk):
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        self.fit_.end_epoch(self.current_epoch)


def fit_with_trainer(fit: ChunkedFit) -> None:
    """Train `fit` with a Trainer on its device that logs, checkpoints, validates and prints nothing of its
    own: its start-up notes (INFO: "GPU available: …", tips) are held back while it runs (slatectl's progress
    lines are the output), as is the LeafSpec deprecation Lightning 2.6 trips on every fit (not ours to fix)."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            device = fit.device
            trainer = pl.Trainer(accelerator=device.type, devices=[device.index or 0] if device.type == "cuda" else 1,
                                 max_epochs=fit.config.max_epochs, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                 limit_val_batches=0)
            trainer.fit(FitModule(fit))
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
