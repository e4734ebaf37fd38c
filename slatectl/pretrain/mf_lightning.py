"""BPR-MF pretraining as a LightningModule trained by `pytorch_lightning.Trainer` (the default engine of
`train_mf`; docs/algorithms.md §3).

As for GeMS (`gems_lightning.py`), the Trainer runs the epochs on the device and the optimisation is the
plain loop's (`mf._train_mf`), so a seed gives the same item table on either engine
(tests/test_mf_lightning.py): the same setup (`mf.prepare_mf`), each epoch's order and negatives drawn
from the same CPU generator when the epoch starts, manual optimisation on the raw Adam optimizer, the
fold-in evaluation every `eval_every_batches` batches, early stopping by patience (which stops the
Trainer at that batch) and a last evaluation at the end. An MF batch is tiny (256 dot products of
20-dim vectors, well under a millisecond), so one `training_step` takes a chunk of `chunk_batches`
batches: Lightning's per-call work is paid once per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import Tensor

from slatectl.pretrain.divergence import require_finite_losses
from slatectl.pretrain.gems_lightning import fit_quietly
from slatectl.pretrain.mf import MFConfig, MFSetup, _EarlyStopping, _epoch_draws, _RunningMean, fold_in_evaluate, mf_result, prepare_mf

#: Batches per `training_step` (an MF batch costs ~0.1–0.5 ms on a CPU; Lightning's call ~0.1 ms).
CHUNK_BATCHES = 256


class EpochDraws:
    """An epoch's batches as chunks of (rows, negatives) slices; iterating starts an epoch and draws its
    order and negatives from the CPU generator then, as the plain loop does."""

    def __init__(self, positives: int, config: MFConfig, generator: torch.Generator, device: torch.device,
                 chunk_batches: int) -> None:
        self.positives, self.config, self.generator, self.device = positives, config, generator, device
        self.chunk_batches = chunk_batches

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.positives / self.config.batch_size) / self.chunk_batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Chunks as two tensors (rows, negatives) of up to chunk_batches × batch_size rows: two tensors
        are what the Trainer walks through to move a batch (a list of 2 × 256 would cost it ~10 ms)."""
        order, negatives = _epoch_draws(self.positives, self.config, self.generator, self.device)
        rows = self.chunk_batches * self.config.batch_size
        for start in range(0, self.positives, rows):
            yield order[start : start + rows], negatives[start : start + rows]


class MFModule(pl.LightningModule):
    def __init__(self, setup: MFSetup, config: MFConfig, chunk_batches: int = CHUNK_BATCHES) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.setup_, self.config = setup, config
        self.model = setup.model
        device = setup.train_item.device
        self.draws = EpochDraws(setup.train_item.shape[0], config, setup.generator, device, chunk_batches)
        self.state = _EarlyStopping(config.patience)
        self.window = _RunningMean(device)  # training loss since the last evaluation
        self.batch, self.epoch = 0, 0
        self.max_batches = config.max_batches if config.max_batches is not None else math.inf

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.setup_.optimizer

    def train_dataloader(self) -> EpochDraws:
        return self.draws

    def on_train_epoch_start(self) -> None:
        self.epoch += 1

    def training_step(self, chunk: tuple[Tensor, Tensor], chunk_index: int) -> None:
        optimizer, pairs = self.setup_.optimizer, self.setup_.pairs
        train_user, train_item = self.setup_.train_user, self.setup_.train_item
        size = self.config.batch_size
        for rows, negatives in zip(chunk[0].split(size), chunk[1].split(size)):
            loss = self.model.loss(train_user[rows], train_item[rows], negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.batch += 1
            self.window.add(loss.detach())
            if self.batch % self.config.eval_every_batches == 0 and len(pairs):
                self.evaluate()
            if self.state.stop or self.batch >= self.max_batches:
                self.trainer.should_stop = True
                break

    def evaluate(self) -> None:
        scores = fold_in_evaluate(self.model.item_embeddings.weight.detach(), self.setup_.pairs)
        train_loss = self.window.pop()
        require_finite_losses("MF", {"training loss": train_loss, "validation loss": scores["loss"]}, f"batch {self.batch}")
        self.state.update(self.batch, scores, train_loss, self.model)

    def result(self) -> tuple[Tensor, dict]:
        # Evaluate the final weights too, so a run cut by max_batches/max_epochs between two evaluation
        # points still chooses among all the weights it produced.
        if len(self.setup_.pairs) and self.state.last_batch != self.batch:
            self.evaluate()
        return mf_result(self.setup_, self.state, self.window, self.batch, self.epoch)


def train_mf_with_trainer(slates: Tensor, clicks: Tensor, config: MFConfig, seed: int, device: torch.device,
                          chunk_batches: int = CHUNK_BATCHES) -> tuple[Tensor, dict]:
    """`mf._train_mf`'s contract, run by a Lightning Trainer on `device`."""
    module = MFModule(prepare_mf(slates, clicks, config, seed, device), config, chunk_batches)
    fit_quietly(module, device, config.max_epochs)
    return module.result()
