"""The one training harness style of slatectl: plain PyTorch with an explicit device and explicit seeds.

GeMS pretraining, MF pretraining and the RL loop all write their loop by hand and use the helpers here
for the two things a framework would otherwise do: put the work on a device (`torch_device`) and fix
the randomness (`seed_everything`, `seeded`). Backward is `loss.backward()` (agents take a `backward`
callable so a future mixed-precision or distributed harness can swap it in one place).

Why not Lightning (which an earlier version used for two of the three): `pl.Trainer` made GeMS
pretraining about 3× slower than an eager loop (per-batch hooks and bookkeeping around small batches),
and in the RL loop Lightning Fabric only provided the device, the seeding and `backward`, each one line
of PyTorch, for a 1.5 s import on every command. One style also means one place where device and seed
semantics are decided: CPU runs are bit-reproducible for a fixed seed, machine and thread count.
"""

from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from slatectl.device import resolve_device

def torch_device(name: str) -> torch.device:
    """The torch.device of a config's `device` (`auto`, `cpu`, `cuda`), checked by `slatectl.device`."""
    return torch.device(resolve_device(name))


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from: torch (CPU and CUDA), NumPy and Python's `random`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's global generators seeded, restoring the caller's RNG state after."""
    device = torch.device(device)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def capture_cuda_graph(record: Callable[[], None], what: str,
                       generators: Sequence[torch.Generator] = ()) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """`record()` captured into a new CUDA graph (recorded, not run: a replay runs it) and None; or, on a
    torch/GPU that cannot capture it, None and why, after warning that `what` runs eagerly from then on.
    `generators`: CUDA generators other than the default one that `record()` draws from (registered, so
    that each replay advances them as an eager call would)."""
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.current_stream()
    try:
        for generator in generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            record()
    except RuntimeError as exc:
        # When the capture fails inside the block, torch.cuda.graph's exit raises from capture_end before it
        # restores the stream, so its capture stream would stay current for all the eager work after this.
        torch.cuda.set_stream(stream)
        failed = f"{type(exc).__name__}: {exc}"[:300]
        warnings.warn(f"{what}: the CUDA graph capture failed, running eagerly ({failed})")
        torch.cuda.synchronize()
        return None, failed
    return graph, None
