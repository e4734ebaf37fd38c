"""How a pretraining fit (`gems_train.GeMSFit`, `mf.MFFit`) runs: on a pytorch_lightning Trainer
(`lightning_engine.py`, the default) or on the plain loop (`engine="loop"`), the same weights bit for bit
(docs/lightning.md, "Pretraining on Lightning"). And every fit's rule: a loss that is not finite has
diverged (typically a learning rate far too high) and fails the fit, so that no NaN model is registered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

import torch

from slatectl.errors import JobFailed


class ChunkedFit:
    """What an engine drives. An epoch is `begin_epoch`, `run_chunk` per chunk of `chunk_batches` batches
    (True: training stops there), `end_epoch`; chunks, so that a Trainer's per-call work is paid per chunk."""

    chunk_batches: int
    optimizer: torch.optim.Optimizer  # raw: the fit steps it
    device: torch.device
    config: Any  # with `batch_size` and `max_epochs`
    batches_per_epoch: int

    def epoch_chunks(self, rows: int) -> Iterable[Any]:
        """A new epoch's batches (its order drawn now) in chunks of `rows` rows."""
        raise NotImplementedError

    def begin_epoch(self) -> None:
        pass

    def run_chunk(self, epoch: int, chunk: Any) -> bool:
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> None:
        pass


class EpochChunks:
    """A fit's epochs as an iterable with a length (a Trainer's data loader): iterating starts an epoch."""

    def __init__(self, fit: ChunkedFit) -> None:
        self.fit = fit

    def __len__(self) -> int:
        return math.ceil(self.fit.batches_per_epoch / self.fit.chunk_batches)

    def __iter__(self) -> Iterator[Any]:
        # A generator, so the draws are made at the first chunk: a Trainer calls iter() once more than it
        # runs epochs, and an order drawn there would shift every later epoch's.
        yield from self.fit.epoch_chunks(self.fit.chunk_batches * self.fit.config.batch_size)


def fit_loop(fit: ChunkedFit) -> None:
    """The plain loop (`engine="loop"`)."""
    chunks = EpochChunks(fit)
    for epoch in range(fit.config.max_epochs):
        fit.begin_epoch()
        stop = any(fit.run_chunk(epoch, chunk) for chunk in chunks)
        fit.end_epoch(epoch)
        if stop:
            return


def _fit_with_trainer(fit: ChunkedFit) -> None:
    # Lightning is imported when a fit trains, not with this module (start-up: docs/architecture.md rule 4).
    from slatectl.pretrain.lightning_engine import fit_with_trainer

    fit_with_trainer(fit)


ENGINES: dict[str, Callable[[ChunkedFit], None]] = {"lightning": _fit_with_trainer, "loop": fit_loop}
DEFAULT_ENGINE = "lightning"


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def require_finite_losses(model: str, losses: Mapping[str, float], when: str, optional: tuple[str, ...] = ()) -> None:
    """JobFailed (exit 1) naming the first loss that is NaN or infinite; the caller registers nothing.
    `optional` names losses that are NaN by design in this run (no validation rows): not checked."""
    for name, value in losses.items():
        if name not in optional and not math.isfinite(value):
            raise JobFailed(f"{model} training diverged: the {name} is {value} at {when}, so no model was "
                            "registered. Lower the learning rate and run it again.")
