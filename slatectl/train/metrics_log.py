"""The metrics log of a run through Lightning Fabric's loggers: `<logs>/run-<id>.csv` (`RunCSVLogger`, with
slatectl's own file writer `RunMetricsFile`) and TensorBoard scalars in `<logs>/tensorboard/run-<id>/` when
the `tensorboard` package is installed. docs/lightning.md says why the writer is our own (the file's place,
its column order, a flush per row) and how a resumed log has no step twice.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lightning_fabric.loggers import CSVLogger, Logger, TensorBoardLogger

from slatectl.errors import BadInput
from slatectl.storage.atomic import write_atomically


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
            try:  # needs the `tensorboard` (or tensorboardX) package; without it the CSV alone is written
                self.loggers.append(TensorBoardLogger(folder / "tensorboard", name="", version=f"run-{run_id}",
                                                      default_hp_metric=False,
                                                      purge_step=None if resume_step is None else resume_step + 1))
            except ModuleNotFoundError:
                if tensorboard:
                    raise BadInput('TensorBoard logging was asked for but the tensorboard package is not '
                                   'installed (pip install "slatectl[tensorboard]").') from None

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
    """Lightning's CSVLogger writing one run's rows to `path` through `RunMetricsFile`, each as it is logged."""

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
        self.columns = ["step", "episode_return", "val_return"]  # then the metrics in the order they come
        self.metrics: list[dict[str, Any]] = []  # rows logged and not saved yet (the CSVLogger's name)
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = _merge_columns(self.columns, reader.fieldnames or [])
                rows = [row for row in reader if row.get("step") and int(row["step"]) <= resume_step]
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
        self._handle.close()  # closing a closed file does nothing

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(self.path, lambda handle: handle.write(text.getvalue().encode()), replace=True)
        self._handle = self.path.open("a", newline="")


def _merge_columns(columns: list[str], more: list[str]) -> list[str]:
    return columns + [c for c in dict.fromkeys(more) if c not in columns]


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value
