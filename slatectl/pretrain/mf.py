"""BPR matrix factorisation on logged clicks: item embeddings for SAC+TopK (MF) (docs/algorithms.md §3).

Each logged episode is a user and every click (episode, item) a positive; negatives are uniform items.
The first `val_fraction` of the episodes are validation users, unseen by training, so they are *folded
in* (`fold_in_pairs`); the reference's validation bugs are deliberately not reproduced (docs §3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slatectl.config_tools import check_params
from slatectl.pretrain.data import check_logged_pair, num_validation
from slatectl.pretrain.engines import DEFAULT_ENGINE, ENGINES, ChunkedFit, check_engine, require_finite_losses


@dataclass(frozen=True)
class MFConfig:
    """Defaults = the reference train_MF.yml / train_MF.py (seed 2022 there; pass it to train_mf)."""

    embedding_dim: int = 20
    num_items: int = 1000
    val_fraction: float = 0.1
    batch_size: int = 256
    lr: float = 1e-4
    num_neg_samples: int = 1
    weight_decay: float = 0.0
    patience: int = 3  # evaluations without improvement before stopping
    eval_every_batches: int = 1000
    max_epochs: int = 100  # safety cap; the reference stops only by patience
    max_batches: int | None = None  # cap on optimiser steps (small runs, tests)

    def validate(self) -> None:
        check_params("mf", [
            *((getattr(self, name) >= 1, f"mf.{name} must be >= 1 (got {getattr(self, name)})")
              for name in ("embedding_dim", "num_items", "batch_size", "num_neg_samples", "patience",
                           "eval_every_batches", "max_epochs")),
            (self.max_batches is None or self.max_batches >= 1,
             f"mf.max_batches must be >= 1 or null (got {self.max_batches})"),
            (0.0 <= self.val_fraction < 1.0, f"mf.val_fraction must lie in [0, 1) (got {self.val_fraction})"),
            (self.lr > 0, f"mf.lr must be > 0 (got {self.lr})"),
            (self.weight_decay >= 0, f"mf.weight_decay must be >= 0 (got {self.weight_decay})"),
        ])


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """Mean of -log σ(s_pos - s_neg) (Rendle et al. 2009) over positives (B,) and their negatives (B, n_neg);
    log-sigmoid instead of the reference's log(σ + 1e-7): the same value without underflow."""
    return -F.logsigmoid(pos_scores.unsqueeze(1) - neg_scores).mean()


def ranking_auc(pos_scores: Tensor, neg_scores: Tensor) -> float:
    """Share of (positive, negative) pairs ranked correctly; ties count one half."""
    diff = pos_scores.unsqueeze(1) - neg_scores
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


class BPRMatrixFactorization(nn.Module):
    """Dot-product MF: score(u, i) = <user_u, item_i>; both tables Xavier-uniform initialised."""

    def __init__(self, num_users: int, num_items: int = 1000, embedding_dim: int = 20) -> None:
        super().__init__()
        self.user_embeddings = nn.Embedding(num_users, embedding_dim)
        self.item_embeddings = nn.Embedding(num_items, embedding_dim)
        nn.init.xavier_uniform_(self.user_embeddings.weight)
        nn.init.xavier_uniform_(self.item_embeddings.weight)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        """users (B,), items (B,) or (B, n) -> scores of the same shape as items."""
        u, v = self.user_embeddings(users), self.item_embeddings(items)
        return torch.einsum("bd,bnd->bn", u, v) if items.ndim == 2 else (u * v).sum(-1)


def click_positives(slates: Tensor, clicks: Tensor) -> tuple[Tensor, Tensor]:
    """(E, H, K) logged episodes -> (episode index, clicked item) for every click, in log order."""
    episode, step, slot = clicks.nonzero(as_tuple=True)
    return episode, slates[episode, step, slot].long()


@dataclass(frozen=True)
class FoldInPairs:
    """Validation users folded in: a user's vector is the mean item embedding of its first-half clicks, and
    it is scored on its second-half clicks against fixed uniform negatives."""

    history_user: Tensor  # (n_hist,) validation-user index of each first-half click
    history_item: Tensor  # (n_hist,)
    num_users: int
    target_user: Tensor  # (n_pairs,) validation-user index of each held-out positive
    target_item: Tensor  # (n_pairs,)
    negative_item: Tensor  # (n_pairs, n_neg)

    def __len__(self) -> int:
        return int(self.target_item.shape[0])


def fold_in_pairs(slates: Tensor, clicks: Tensor, num_items: int, num_neg: int, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> FoldInPairs:
    """Validation pairs from (E_val, H, K) episodes, on `device`; users without clicks in either half are dropped."""
    half = slates.shape[1] // 2
    hist_user, hist_item = click_positives(slates[:, :half], clicks[:, :half])
    tgt_user, tgt_item = click_positives(slates[:, half:], clicks[:, half:])
    keep = torch.isin(tgt_user, hist_user)
    tgt_user, tgt_item = tgt_user[keep], tgt_item[keep]
    negatives = torch.randint(num_items, (tgt_item.shape[0], num_neg), generator=generator)
    return FoldInPairs(hist_user.to(device), hist_item.to(device), slates.shape[0], tgt_user.to(device),
                       tgt_item.to(device), negatives.to(device))


@torch.no_grad()
def fold_in_evaluate(item_table: Tensor, pairs: FoldInPairs) -> dict[str, float]:
    """BPR loss and AUC of held-out clicks vs negatives, users = mean of their history items."""
    sums = torch.zeros(pairs.num_users, item_table.shape[1], device=item_table.device)
    sums.index_add_(0, pairs.history_user, item_table[pairs.history_item])
    counts = torch.bincount(pairs.history_user, minlength=pairs.num_users).clamp(min=1).unsqueeze(1)
    users = (sums / counts)[pairs.target_user]
    pos = (users * item_table[pairs.target_item]).sum(-1)
    neg = torch.einsum("bd,bnd->bn", users, item_table[pairs.negative_item])
    return {"loss": bpr_loss(pos, neg).item(), "auc": ranking_auc(pos, neg)}


def train_mf(slates: Tensor, clicks: Tensor, config: MFConfig, seed: int,
             device: torch.device | str = "cpu", engine: str = DEFAULT_ENGINE) -> tuple[Tensor, dict[str, Any]]:
    """Train BPR-MF on (E, H, K) logged episodes; return the item table (num_items, dim, on the CPU) with
    the best validation loss (evaluated every `eval_every_batches` steps and at the end; training stops
    after `patience` evaluations without improvement; without validation users: the final table) and
    metrics. `engine`: one of `engines.ENGINES`. Seeds are explicit (a CPU generator for the data order
    and negatives, a forked global RNG for the initial weights): the caller's RNG is left untouched. On a
    device: docs §2 "On a device"."""
    config.validate()
    check_engine(engine)
    # Gradients on whatever global grad mode the caller left (simulator rollouts switch it off).
    with torch.enable_grad():
        fit = MFFit(slates, clicks, config, seed, torch.device(device))
        ENGINES[engine](fit)
        table, metrics = fit.result()
    return table.cpu(), metrics


class MFFit(ChunkedFit):
    """One BPR-MF training as an engine runs it (`engines.ChunkedFit`), a chunk being (positives' rows, their
    negatives); `result` at the end. Set up in the order the draws were always made: validation pairs (their
    negatives from the epoch draws' CPU generator), training positives, the model under a forked global RNG."""

    chunk_batches = 256  # why 256: BENCHMARKS.md, "Kernel notes: pretrain chunks and dtypes"

    def __init__(self, slates: Tensor, clicks: Tensor, config: MFConfig, seed: int, device: torch.device) -> None:
        check_logged_pair(slates, clicks, ndim=(3,), num_items=config.num_items)
        self.config, self.device = config, device
        self.n_val = num_validation(slates.shape[0], config.val_fraction)
        self.generator = torch.Generator().manual_seed(seed)
        self.pairs = fold_in_pairs(slates[:self.n_val], clicks[:self.n_val], config.num_items, config.num_neg_samples,
                                   self.generator, device)
        train_user, train_item = click_positives(slates[self.n_val:], clicks[self.n_val:])
        if train_item.numel() == 0:
            raise ValueError("no clicks in the training episodes: nothing to learn from")
        self.train_user, self.train_item = train_user.to(device), train_item.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BPRMatrixFactorization(slates.shape[0] - self.n_val, config.num_items, config.embedding_dim)
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.batches_per_epoch = math.ceil(self.train_item.shape[0] / config.batch_size)
        self.batch, self.epoch = 0, 0
        self.max_batches = config.max_batches if config.max_batches is not None else math.inf
        # The training loss since the last evaluation, summed on the device (float64, as Python floats were).
        self.loss_total, self.loss_count = torch.zeros((), dtype=torch.float64, device=device), 0
        # Early stopping: the best evaluation's table, and evaluations since it.
        self.best_loss, self.best_batch, self.best_table = math.inf, 0, None
        self.bad_evaluations, self.last_evaluated, self.stop = 0, -1, False
        self.history: list[dict[str, float]] = []

    def epoch_chunks(self, rows: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's order of the positives and their negatives (one row per positive), on the device, drawn
        as the batch loop drew them (the permutation, then the negatives): CPU integer draws are serial, so one
        call per epoch gives one per batch's numbers. A cut run draws unused negatives, but nothing after them."""
        self.epoch += 1
        positives, negatives_each = self.train_item.shape[0], self.config.num_neg_samples
        order = torch.randperm(positives, generator=self.generator)
        negatives = torch.randint(self.config.num_items, (positives, negatives_each), generator=self.generator)
        return zip(order.to(self.device).split(rows), negatives.to(self.device).split(rows))

    def run_chunk(self, epoch: int, chunk: tuple[Tensor, Tensor]) -> bool:
        size = self.config.batch_size
        for rows, negatives in zip(chunk[0].split(size), chunk[1].split(size)):
            users = self.train_user[rows]
            loss = bpr_loss(self.model.score(users, self.train_item[rows]), self.model.score(users, negatives))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.batch += 1
            self.loss_total += loss.detach()
            self.loss_count += 1
            if self.batch % self.config.eval_every_batches == 0 and len(self.pairs):
                self.evaluate()
            if self.stop or self.batch >= self.max_batches:
                return True
        return False

    def _pop_train_loss(self) -> float:
        mean = self.loss_total.item() / self.loss_count if self.loss_count else math.nan
        self.loss_total.zero_()
        self.loss_count = 0
        return mean

    def evaluate(self) -> None:
        """Fold-in validation of the current table: kept if it is the best, a stop after `patience` that are not."""
        table = self.model.item_embeddings.weight.detach()
        scores = fold_in_evaluate(table, self.pairs)
        train_loss = self._pop_train_loss()
        require_finite_losses("MF", {"training loss": train_loss, "validation loss": scores["loss"]},
                              f"batch {self.batch}")
        self.last_evaluated = self.batch
        self.history.append({"batch": float(self.batch), "train_loss": train_loss, "val_loss": scores["loss"],
                             "val_auc": scores["auc"]})
        if scores["loss"] < self.best_loss:
            self.best_loss, self.best_batch, self.bad_evaluations = scores["loss"], self.batch, 0
            self.best_table = table.clone()
        else:
            self.bad_evaluations += 1
            self.stop = self.bad_evaluations >= self.config.patience

    def result(self) -> tuple[Tensor, dict[str, Any]]:
        """The best item table and the metrics. The final weights are evaluated too, so that a run cut by
        max_batches/max_epochs between two evaluation points chooses among all the weights it produced."""
        validated = len(self.pairs) > 0
        if validated and self.last_evaluated != self.batch:
            self.evaluate()
        final_train_loss = self.history[-1]["train_loss"] if self.history else self._pop_train_loss()
        if self.batch:
            require_finite_losses("MF", {"training loss": final_train_loss}, f"batch {self.batch}")
        table = self.best_table if self.best_table is not None else self.model.item_embeddings.weight.detach().clone()
        return table, {
            "batches": self.batch,
            "epochs_started": self.epoch,
            "stopped_early": self.stop,
            "best_batch": self.best_batch,
            "val_loss": self.best_loss if validated else math.nan,
            "val_auc": fold_in_evaluate(table, self.pairs)["auc"] if validated else math.nan,
            "train_loss": final_train_loss,
            "n_train_users": self.model.user_embeddings.num_embeddings,
            "n_train_positives": int(self.train_item.shape[0]),
            "n_val_users": self.n_val,
            "n_val_pairs": len(self.pairs),
            "history": self.history,
        }
