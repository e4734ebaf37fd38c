"""Pretraining on logged data: the GeMS slate VAE and BPR matrix-factorisation item embeddings.

See docs/algorithms.md §2–3. Library code only: registering artifacts and the CLI live elsewhere.
Modules: `gems` (the model), `gems_stack` (its objective over a leading member dimension K ≥ 1),
`gems_train` (GeMSConfig, train_gems for one member, train_gems_population for several), `mf` (MFConfig,
BPRMatrixFactorization, train_mf); both fits run on a pytorch_lightning Trainer (`lightning_engine`,
imported only when they train) or on the plain loop `engine="loop"` (`engines`). Names are re-exported
lazily so that importing one part does not import the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GeMS": "gems",
    "GeMSStack": "gems_stack",
    "gaussian_kl_to_standard_normal": "gems_stack",
    "GeMSConfig": "gems_train",
    "GeMSMember": "gems_train",
    "build_gems": "gems_train",
    "train_gems": "gems_train",
    "train_gems_population": "gems_train",
    "BPRMatrixFactorization": "mf",
    "MFConfig": "mf",
    "train_mf": "mf",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
