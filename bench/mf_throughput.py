"""BPR-MF pretraining throughput: the plain loop against the Lightning Trainer engine of `train_mf`, ABBA in
one process (loop, lightning, lightning, loop) on the same data and seed.

Usage: python bench/mf_throughput.py [--episodes E] [--batches N] [--threads T]

Synthetic logged episodes of the reference shape (100 slates of 10 items, ~1 click per slate); each run is
capped at N optimiser steps (batch 256, the reference settings) with evaluations every 1,000 batches as in
the reference, and timed from start to end (set-up included: it is part of what a user waits for). Prints
the median batches/s (wall and per CPU-second) of each engine, their ratio, and whether both gave the same
item table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import pytorch_lightning
import torch

from slatectl.pretrain.mf import MFConfig, train_mf


def synthetic_logged(episodes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    slates = torch.randint(1000, (episodes, 100, 10), generator=generator)
    clicks = (torch.rand(episodes, 100, 10, generator=generator) < 0.1).float()
    return slates, clicks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=2_000)
    parser.add_argument("--batches", type=int, default=6_000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    slates, clicks = synthetic_logged(args.episodes)
    config = MFConfig(max_batches=args.batches, patience=10**6)
    wall: dict[str, list[float]] = {"loop": [], "lightning": []}
    cpu: dict[str, list[float]] = {"loop": [], "lightning": []}
    tables: dict[str, torch.Tensor] = {}
    for engine in ("loop", "lightning", "lightning", "loop"):
        started, started_cpu = time.perf_counter(), time.process_time()
        table, metrics = train_mf(slates, clicks, config, seed=0, engine=engine)
        wall[engine].append(metrics["batches"] / (time.perf_counter() - started))
        cpu[engine].append(metrics["batches"] / (time.process_time() - started_cpu))
        tables.setdefault(engine, table)
    loop, lightning = statistics.median(wall["loop"]), statistics.median(wall["lightning"])
    cpu_loop, cpu_lightning = statistics.median(cpu["loop"]), statistics.median(cpu["lightning"])
    print(f"device: cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, pytorch-lightning {pytorch_lightning.__version__}; {args.episodes:,} episodes, "
          f"{args.batches:,} batches of {config.batch_size} per run, runs loop, lightning, lightning, loop")
    print("| engine | median batches/s (wall) | median batches per CPU-second |")
    print("|---|---:|---:|")
    print(f"| plain loop | {loop:,.0f} | {cpu_loop:,.0f} |")
    print(f"| Lightning Trainer | {lightning:,.0f} | {cpu_lightning:,.0f} |")
    print(f"| Lightning / loop | {lightning / loop:.3f} | {cpu_lightning / cpu_loop:.3f} |")
    print(f"| same item table (bitwise) | {'yes' if torch.equal(tables['loop'], tables['lightning']) else 'NO'} | |")


if __name__ == "__main__":
    main()
