"""Read back what a registered dataset file holds (npz or the Minari HDF5 file), without unpickling."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slatectl.domain import DatasetFormat


class UnreadableDataset(ValueError):
    """The file is registered and intact but is not a dataset slatectl can read (e.g. registered by hand)."""


def episode_returns(path: Path, format: str) -> np.ndarray:
    """Per-episode returns, in episode order; UnreadableDataset if the file holds none."""
    try:
        return _episode_returns(path, format)
    except (ValueError, OSError, KeyError) as exc:
        raise UnreadableDataset(f"{path.name} holds no readable episode returns ({type(exc).__name__}: {exc})") from exc


def _episode_returns(path: Path, format: str) -> np.ndarray:
    if format == DatasetFormat.NPZ:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["episode_returns"], dtype=np.float64)
    if format == DatasetFormat.MINARI:
        import h5py

        with h5py.File(path, "r") as data:
            names = sorted((n for n in data if n.startswith("episode_")), key=lambda n: int(n.split("_")[1]))
            return np.array([float(np.sum(data[n]["rewards"][()])) for n in names], dtype=np.float64)
    raise ValueError(f"unknown dataset format {format!r}")


def return_summary(returns: np.ndarray) -> dict[str, float]:
    """Mean, std and the percentiles a person reads a return distribution by."""
    q = np.percentile(returns, [0, 5, 25, 50, 75, 95, 100])
    return {"mean": float(returns.mean()), "std": float(returns.std(ddof=1)) if returns.size > 1 else 0.0,
            "min": float(q[0]), "p5": float(q[1]), "p25": float(q[2]), "median": float(q[3]),
            "p75": float(q[4]), "p95": float(q[5]), "max": float(q[6])}
