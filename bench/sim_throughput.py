"""User-steps per second of the batched TopicRec simulator, by device, batch size and policy.

Usage: python bench/sim_throughput.py [--device cpu|cuda] [--env focused_topdown] [--repeats 3]
       [--batches 1,64,1024,16384] [--policies random,oracle] [--threads N] [--quick]
Each measurement runs whole episodes (reset + 100 steps) for B users; the median of the repeats is
reported (one warm-up batch first). `--quick`: B = 64 and 1,024, one repeat (seconds on a CPU; for
scripts and CI smoke runs). The GPU target is B = 1,048,576 (`--device cuda --batches 1048576`).
Prints one Markdown table (paste into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from slatectl.device import resolve_device
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rollout import run_episodes


def measure(env_name: str, policy_name: str, batch: int, repeats: int, device: str) -> float:
    env = make_env(env_name, device=device)
    policy = POLICIES[policy_name]()
    # At least ~10k user-steps per measurement so small batches are not dominated by timer noise.
    batches_per_measure = max(1, 10_000 // (batch * env.config.episode_length))
    rates = []
    run_episodes(env, policy, torch.arange(batch, device=device), seed=0).sum().item()  # warm-up
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(batches_per_measure):
            ids = torch.arange(batch, device=device) + (r * batches_per_measure + i) * batch
            returns = run_episodes(env, policy, ids, seed=1)
        returns.sum().item()  # wait for the device before stopping the clock
        elapsed = time.perf_counter() - start
        rates.append(batches_per_measure * batch * env.config.episode_length / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", default="1,64,1024,16384")
    parser.add_argument("--policies", default="random,oracle")
    parser.add_argument("--quick", action="store_true", help="B = 64, 1024; one repeat")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.repeats = "64,1024", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    load = " load average %.2f %.2f %.2f," % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(f"simulator throughput: {device} ({card}),{load} {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, env {args.env}")
    print(f"| device | policy | B | user-steps/s (median of {args.repeats}) |")
    print("|---|---|---:|---:|")
    for policy_name in args.policies.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rate = measure(args.env, policy_name, batch, args.repeats, device)
            print(f"| {device} | {policy_name} | {batch:,} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
