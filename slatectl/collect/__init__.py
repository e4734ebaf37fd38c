"""Offline datasets from promoted checkpoints (the end of the pipeline).

`load_npz(path)` reads an npz dataset back as `(arrays, metadata)` (see slatectl.collect.npz). It is
resolved on first use (PEP 562) so that light users of this package, such as `ckpt promote`'s
`random_return`, do not import numpy at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_npz"]


def __getattr__(name: str) -> Any:
    if name == "load_npz":
        return importlib.import_module("slatectl.collect.npz").load_npz
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
