"""Count the reads of tensor values to the host made by slatectl code (each one a device sync on a GPU).

`count_host_reads(monkeypatch)` patches the torch.Tensor methods that copy a value to Python or to the
CPU (`item`, `tolist`, `cpu`, `numpy`, `float()`, `int()`, `bool()`) and counts the calls whose caller is
a `slatectl` module; torch's own internal reads (e.g. CPU optimizer step counters) are not counted. On
the CPU these calls cost nothing, so counting them is how a CPU-only CI keeps GPU loops free of
per-batch / per-step syncs.
"""

from __future__ import annotations

import sys
from collections import Counter

import torch

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def count_host_reads(monkeypatch) -> Counter:
    """Patch torch.Tensor for the rest of the test; returns a Counter of (method, caller module) → calls."""
    counts: Counter = Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, __original=original, __name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("slatectl."):
                counts[(__name, caller)] += 1
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


#: torch functions that make a tensor from host data (a Python number or list, a NumPy array).
HOST_DATA_FACTORIES = ("tensor", "as_tensor", "asarray", "from_numpy")


def count_tensors_from_host_data(monkeypatch) -> Counter:
    """Patch the torch factories of HOST_DATA_FACTORIES; count the calls from `slatectl` modules whose data is
    not already a tensor: (function, caller module) → calls.

    On a GPU each such call with `device=` is a synchronous host-to-device copy, and a CUDA graph capture
    (the GeMS step, training's episodes) fails on it ("operation not permitted when stream is capturing");
    on the CPU it is free, so counting the calls is how a CPU-only CI keeps captured code free of them."""
    counts: Counter = Counter()
    for name in HOST_DATA_FACTORIES:
        original = getattr(torch, name)

        def counted(data, *args, __original=original, __name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("slatectl.") and not isinstance(data, torch.Tensor):
                counts[(__name, caller)] += 1
            return __original(data, *args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    return counts
