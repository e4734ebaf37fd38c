"""Item-embedding tables: deterministic generation (simulator.md) and loading from .npy files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from slatectl.errors import BadInput


def generate_item_embeddings(
    seed: int, num_items: int = 1000, num_topics: int = 10, topic_size: int = 2, power: float = 1.0
) -> torch.Tensor:
    """The spec's generator: per-item topic weights times |clamp(0.4·N(0,1))| chunks, ^power, rows L2-normalised.

    numpy's PCG64 is used because its stream is stable across numpy versions and platforms, so a seed
    names one table forever.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    weights = rng.uniform(0.0, 1.0, size=(num_items, num_topics))
    weights /= weights.sum(axis=1, keepdims=True)
    chunks = np.abs(np.clip(0.4 * rng.standard_normal((num_items, num_topics, topic_size)), -1.0, 1.0))
    table = (chunks * weights[..., None]).reshape(num_items, num_topics * topic_size) ** power
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    return torch.from_numpy(table.astype(np.float32))


def load_item_embeddings(path: str | Path, num_items: int = 1000, dim: int = 20) -> torch.Tensor:
    """Load an N×D float table from .npy; refuse anything of the wrong shape or with non-finite values."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"item-embeddings file {str(path)!r} does not exist. Pass a .npy file holding a {num_items}×{dim} float array.")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # EOFError: an empty or truncated file
        raise BadInput(f"cannot read {str(path)!r} as a .npy array ({exc}). Pass a .npy file holding a {num_items}×{dim} float array.") from None
    if not isinstance(array, np.ndarray):  # np.load opens a .npz archive (e.g. renamed to .npy) as an NpzFile
        array.close()
        raise BadInput(f"{str(path)!r} is an .npz archive, not a .npy array. Pass a .npy file holding a {num_items}×{dim} float array.")
    if array.shape != (num_items, dim) or not np.issubdtype(array.dtype, np.floating):
        raise BadInput(f"{str(path)!r} holds a {array.dtype} array of shape {array.shape}; expected a {num_items}×{dim} float array.")
    if not np.isfinite(array).all():
        raise BadInput(f"{str(path)!r} contains NaN or infinite values.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def reference_embeddings_path(variant: str) -> Path:
    """The reference simulator's own tables, shipped with the package for comparison tests."""
    return Path(str(resources.files("slatectl.sim").joinpath("data", f"item_embeddings_{variant}.npy")))


def item_topics(table: torch.Tensor, num_topics: int) -> torch.Tensor:
    """Main topic of each item: the topic whose chunk of the embedding has the largest L2 norm."""
    return table.view(table.shape[0], num_topics, -1).norm(dim=-1).argmax(dim=-1)
