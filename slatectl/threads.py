"""How many CPU threads torch uses in a compute process (training, collection, pretraining, rollouts).

Default (`auto`): the cores this process may run on, shared by the jobs that run at once — cores ÷
concurrent jobs, at least 1 — so `--jobs K` never asks for more threads than there are cores. Measured on
2 idle cores: the simulator rollout runs 1.45× faster with 2 threads than with 1, the K = 6 population
1.40× (BENCHMARKS.md). `--threads N` / `SLATECTL_THREADS=N` give each process exactly N threads (the CLI
contract: torch threads per process), so `--jobs K` then uses K × N.

Idle OpenMP threads must not spin: when another process keeps a core busy, torch's spinning worker threads
fight it for the core (a run measured 20+ min instead of 3–5 min). OpenMP reads its wait policy
(OMP_WAIT_POLICY) once, when torch loads it, so it cannot be set here: the console-script entry
(`slatectl.cli.main`) puts PASSIVE in the environment before anything imports torch, unless the user
exported a policy (PASSIVE changes only how idle threads wait, never a result).

torch allows the inter-op pool size to be set only once per process, before any parallel work; the
second attempt raises, so it is set only when it differs and a refusal is ignored (the intra-op count,
which is what the small models here use, is always applied).
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def threads_per_job(settings_threads: int | None, jobs: int = 1, cores: int | None = None) -> int:
    """Torch threads for each of `jobs` concurrent processes: `settings_threads` when given, else
    `cores` (default: the available cores) ÷ `jobs`, at least 1."""
    if settings_threads is not None:
        return max(1, settings_threads)
    return max(1, (available_cores() if cores is None else cores) // max(1, jobs))


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
