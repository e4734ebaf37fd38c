"""The metrics log of a run, written through Lightning Fabric's loggers: one CSV row per logged step
(`<logs>/run-<id>.csv`, a `CSVLogger`), and TensorBoard scalars (`<logs>/tensorboard/run-<id>/`, a
`TensorBoardLogger`) when the `tensorboard` package is installed.

What Lightning's CSVLogger gives as it stands would not do for a run's log: it writes
`<root>/<name>/<version>/metrics.csv`, deletes that file when it opens a non-empty folder, buffers rows,
and sorts its columns alphabetically. `RunCSVLogger` is that logger with its file writer (its
`experiment`) replaced by `RunMetricsFile`, which keeps the file where users and `inspect`/plot scripts
find it and the columns in their documented order: `step`, `episode_return`, `val_return` first, then
every metric an agent's `update` returned, in the order they first appeared (SAC's
critic_loss/actor_loss/alpha/…, SlateQ's q_loss/epsilon/…, REINFORCE's loss/…). Every row is on disk
when `write` returns (flushed, as a kill loses no finished step); when a row brings a new metric the file
is rewritten once with the wider header (temp + fsync + rename), so every row stays aligned with it.

Resume: opening the log at step S keeps the rows with step ≤ S and drops the later ones (they are redone
after a kill), and the TensorBoard writer purges its events after S, so neither has a step twice.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from lightning_fabric.loggers import CSVLogger, Logger, TensorBoardLogger

from slatectl.errors import BadInput

LEADING_COLUMNS = ["step", "episode_return", "val_return"]


class MetricsLog:
    """A run's metrics log. `folder` None logs nothing. `resume_step` S: continue the log of a resumed run
    from step S (rows after S dropped). `tensorboard`: None writes TensorBoard events when the package is
    installed, True requires it (BadInput when it is missing), False writes the CSV only."""

    def __init__(self, folder: Path | None, run_id: int, resume_step: int | None = None,
                 tensorboard: bool | None = None):
        self.path = None if folder is None else folder / f"run-{run_id}.csv"
        self.loggers: list[Logger] = []
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.csv = RunCSVLogger(self.path, resume_step)
        self.loggers.append(self.csv)
        if tensorboard is not False:
            board = _tensorboard_logger(folder / "tensorboard", f"run-{run_id}",
                                        purge_step=None if resume_step is None else resume_step + 1)
            if board is None and tensorboard:
                raise BadInput('TensorBoard logging was asked for but the tensorboard package is not installed '
                               '(pip install "slatectl[tensorboard]").')
            if board is not None:
                self.loggers.append(board)

    @property
    def columns(self) -> list[str]:
        return self.csv.experiment.columns if self.path is not None else list(LEADING_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        """Log one step's row (`step` and the metrics; None values are left out)."""
        if not self.loggers:
            return
        step = int(row["step"])
        metrics = {name: value for name, value in row.items() if name != "step" and value is not None}
        self.csv.log_metrics(metrics, step)
        # TensorBoard takes numbers only; a non-finite value is in the CSV ("nan", "inf") but not plotted.
        scalars = {name: value for name, value in metrics.items()
                   if isinstance(value, (int, float)) and math.isfinite(value)}
        for logger in self.loggers[1:]:
            logger.log_metrics(scalars, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.finalize("success")
        self.loggers = []


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing one run's rows to `path` through `RunMetricsFile` (module doc),
    each row saved as it is logged."""

    def __init__(self, path: Path, resume_step: int | None = None):
        super().__init__(root_dir=path.parent, name="", version=path.stem, flush_logs_every_n_steps=1)
        self._experiment = RunMetricsFile(path, resume_step)  # what the CSVLogger's `experiment` returns

    def finalize(self, status: str) -> None:
        super().finalize(status)  # saves what is queued
        self._experiment.close()


class RunMetricsFile:
    """The CSVLogger's experiment writer for one run's file (`log_metrics` queues a row, `save` writes)."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.columns = list(LEADING_COLUMNS)
        self.metrics: list[dict[str, Any]] = []  # rows logged and not saved yet (the CSVLogger's name)
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = _merge_columns(self.columns, reader.fieldnames or [])
                rows = [row for row in reader if row.get("step") and int(row["step"]) <= resume_step]
        self._handle = None
        self._rewrite(rows)  # a fresh run starts an empty file; a resumed one drops the steps it redoes

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.metrics.append({"step": step, **{k: _format(v) for k, v in metrics.items()}})

    def save(self) -> None:
        if not self.metrics:
            return
        wider = _merge_columns(self.columns, [name for row in self.metrics for name in row])
        if wider != self.columns:
            self.columns = wider
            self._handle.close()
            with self.path.open(newline="") as handle:
                saved = list(csv.DictReader(handle))
            self._rewrite(saved + self.metrics)
        else:
            csv.DictWriter(self._handle, fieldnames=self.columns).writerows(self.metrics)
            self._handle.flush()
        self.metrics = []

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        _replace_file(self.path, text.getvalue())
        self._handle = self.path.open("a", newline="")


def _replace_file(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, and rename it over `path`."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _merge_columns(columns: list[str], more: list[str]) -> list[str]:
    return columns + [c for c in dict.fromkeys(more) if c not in columns]


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def _tensorboard_logger(root: Path, version: str, purge_step: int | None) -> TensorBoardLogger | None:
    """Lightning's TensorBoardLogger writing to `root/version` when `tensorboard` (or tensorboardX) is
    installed; None otherwise (CSV only). `purge_step` drops events at and after that step (a resume)."""
    try:
        return TensorBoardLogger(root, name="", version=version, default_hp_metric=False, purge_step=purge_step)
    except ModuleNotFoundError:
        return None
