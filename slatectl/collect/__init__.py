"""Offline datasets from promoted checkpoints (the end of the pipeline).

`load_npz(path)` reads an npz dataset back as `(arrays, metadata)` (see slatectl.collect.npz).
"""

from slatectl.collect.npz import load_npz

__all__ = ["load_npz"]
