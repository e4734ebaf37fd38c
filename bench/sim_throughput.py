"""User-steps per second of the batched TopicRec simulator, by batch size and policy.

Usage: python bench/sim_throughput.py [--env focused_topdown] [--repeats 3] [--threads N]
Each measurement runs whole episodes (reset + 100 steps) for B users; the median of the repeats is
reported. Results go to stdout as a Markdown table (paste into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rollout import run_episodes


def measure(env_name: str, policy_name: str, batch: int, repeats: int) -> float:
    env = make_env(env_name)
    policy = POLICIES[policy_name]()
    # At least ~10k user-steps per measurement so small batches are not dominated by timer noise.
    batches_per_measure = max(1, 10_000 // (batch * env.config.episode_length))
    rates = []
    run_episodes(env, policy, torch.arange(batch), seed=0)  # warm-up
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(batches_per_measure):
            run_episodes(env, policy, torch.arange(batch) + (r * batches_per_measure + i) * batch, seed=1)
        elapsed = time.perf_counter() - start
        rates.append(batches_per_measure * batch * env.config.episode_length / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", default="1,64,1024,16384")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, env {args.env}")
    print("| policy | B | user-steps/s (median of %d) |" % args.repeats)
    print("|---|---:|---:|")
    for policy_name in ("random", "oracle"):
        for batch in (int(b) for b in args.batches.split(",")):
            print(f"| {policy_name} | {batch} | {measure(args.env, policy_name, batch, args.repeats):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
