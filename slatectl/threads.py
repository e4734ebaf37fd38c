"""How many CPU threads torch uses in a compute process (training, collection, pretraining, rollouts).

Default: one torch thread per concurrent job. Measured on a 2-core machine: one intra-op thread is as
fast as two when the machine is idle, and about 20x faster when another process keeps a core busy
(torch's spinning worker threads then fight for the core). `--threads N` / `SLATECTL_THREADS=N` give
each process N threads (the CLI contract: torch threads per process), so `--jobs K` uses K × N.

torch allows the inter-op pool size to be set only once per process, before any parallel work; the
second attempt raises, so it is set only when it differs and a refusal is ignored (the intra-op count,
which is what the small models here use, is always applied).
"""

from __future__ import annotations

import torch


def threads_per_job(settings_threads: int | None, jobs: int = 1) -> int:
    """Torch threads for each of `jobs` concurrent processes: `settings_threads` when given, else 1."""
    return 1 if settings_threads is None else max(1, settings_threads)


def configure_torch_threads(settings_threads: int | None, jobs: int = 1) -> int:
    """Apply the thread count to this process's torch (intra-op and inter-op) and return it."""
    count = threads_per_job(settings_threads, jobs)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:
            pass  # already set, or parallel work already ran in this process: torch keeps the first value
    return count
