"""BPR-MF pretraining as a LightningModule trained by `pytorch_lightning.Trainer` (the default engine of
`train_mf`; docs/algorithms.md §3).

As for GeMS (`gems_lightning.py`), the Trainer runs the epochs on the device and the optimisation is
`mf.MFFit`'s, which the plain loop drives too, so a seed gives the same item table on either engine
(tests/test_mf_lightning.py): each epoch's order and negatives drawn from the same CPU generator when the
epoch starts, manual optimisation on the raw Adam optimizer, the fold-in evaluation every
`eval_every_batches` batches, early stopping by patience (which stops the Trainer at that batch) and a
last evaluation at the end. An MF batch is tiny (256 dot products of
20-dim vectors, well under a millisecond), so one `training_step` takes a chunk of `chunk_batches`
batches: Lightning's per-call work is paid once per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import Tensor

from slatectl.pretrain.gems_lightning import fit_quietly
from slatectl.pretrain.mf import MFFit

#: Batches per `training_step` (an MF batch costs ~0.1–0.5 ms on a CPU; Lightning's call ~0.1 ms).
CHUNK_BATCHES = 256


class EpochDraws:
    """An epoch's batches as chunks of (rows, negatives) slices; iterating starts an epoch and draws its
    order and negatives then (`MFFit.epoch_draws`), as the plain loop does."""

    def __init__(self, fit: MFFit, chunk_batches: int) -> None:
        self.fit, self.chunk_batches = fit, chunk_batches

    def __len__(self) -> int:
        return math.ceil(self.fit.batches_per_epoch / self.chunk_batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Chunks as two tensors (rows, negatives) of up to chunk_batches × batch_size rows: two tensors
        are what the Trainer walks through to move a batch (a list of 2 × 256 would cost it ~10 ms)."""
        order, negatives = self.fit.epoch_draws()
        rows = self.chunk_batches * self.fit.config.batch_size
        for start in range(0, order.shape[0], rows):
            yield order[start : start + rows], negatives[start : start + rows]


class MFModule(pl.LightningModule):
    """The batches of an `MFFit` as Lightning hooks; a stop (patience, batch cap) stops the Trainer."""

    def __init__(self, fit: MFFit, chunk_batches: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.fit_, self.draws = fit, EpochDraws(fit, chunk_batches)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.fit_.optimizer

    def train_dataloader(self) -> EpochDraws:
        return self.draws

    def training_step(self, chunk: tuple[Tensor, Tensor], chunk_index: int) -> None:
        size = self.fit_.config.batch_size
        for rows, negatives in zip(chunk[0].split(size), chunk[1].split(size)):
            if self.fit_.run_batch(rows, negatives):
                self.trainer.should_stop = True
                break


def fit_with_trainer(fit: MFFit) -> None:
    """Run `fit`'s batches with a Lightning Trainer on its device."""
    fit_quietly(MFModule(fit, CHUNK_BATCHES), fit.device, fit.config.max_epochs)
