"""The metrics log of a run: one CSV row per logged step, and TensorBoard scalars when installed.

Columns are discovered from the rows: `step`, `episode_return`, `val_return` first, then every metric
an agent's `update` returned, in the order they first appeared (SAC's critic_loss/actor_loss/alpha/…,
SlateQ's q_loss/epsilon/…, REINFORCE's loss/…). When a row brings a new metric the file is rewritten
once with the wider header (atomically), so every row stays aligned with the header.

Resume: opening the log at step S keeps the rows with step ≤ S and drops the later ones (they are redone
after a kill), and TensorBoard is told to purge its events after S, so neither has a duplicate step.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

LEADING_COLUMNS = ["step", "episode_return", "val_return"]


class MetricsLog:
    def __init__(self, folder: Path | None, run_id: int, resume_step: int | None = None):
        self.path = None if folder is None else folder / f"run-{run_id}.csv"
        self.columns = list(LEADING_COLUMNS)
        self._handle = None
        self._tensorboard = None
        if self.path is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = _merge_columns(self.columns, reader.fieldnames or [])
                rows = [row for row in reader if row.get("step") and int(row["step"]) <= resume_step]
        self._rewrite(rows)
        self._tensorboard = _tensorboard_writer(folder / "tensorboard" / f"run-{run_id}",
                                                purge_step=None if resume_step is None else resume_step + 1)

    def write(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        formatted = {k: _format(v) for k, v in row.items() if v is not None}
        if set(formatted) - set(self.columns):
            self.columns = _merge_columns(self.columns, list(formatted))
            self._handle.close()
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            self._rewrite(rows)
        csv.DictWriter(self._handle, fieldnames=self.columns).writerow(formatted)
        self._handle.flush()
        if self._tensorboard is not None:
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tensorboard.add_scalar(name, value, global_step=int(row["step"]))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
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
    return columns + [c for c in more if c not in columns]


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def _tensorboard_writer(folder: Path, purge_step: int | None):
    """A TensorBoard writer when the `tensorboard` package is installed; None otherwise (CSV only)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)
