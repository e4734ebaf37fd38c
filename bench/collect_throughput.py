"""Collection throughput: transitions/s of `collect_dataset` end to end (simulate, record, write the npz,
hash, register) for the random policy and for a SAC+GeMS checkpoint.

Usage: python bench/collect_throughput.py [--env focused_topdown] [--episodes 10000] [--batch 1000,5000]
       [--agents random,sac-gems] [--threads N]
The SAC+GeMS checkpoint comes from a tiny run in a throwaway registry (small logged data, one short GeMS
epoch, random-phase steps only): its weights do not change the cost of acting. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from slatectl.registry import open_registry
from slatectl.collect.collector import CollectRequest, collect_dataset
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer

TINY = ["logged.episodes=300", "gems.max_epochs=1", "gems.max_slates=5000", "training.random_steps=4",
        "training.val_episodes=10", "training.test_episodes=10"]


def promote_tiny_checkpoint(registry, agent: str, env: str) -> None:
    config = resolve_run_config(agent, env, overrides=TINY, cli_training={"max_steps": 4, "save_every": 4})
    run_id = Trainer(registry, config).run(command="bench").run_id
    checkpoint = registry.list_checkpoints(run_id=run_id)[-1]
    registry.promote_checkpoint(env, "medium", checkpoint.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--batch", default="1000,5000", help="users simulated at once (collect --batch)")
    parser.add_argument("--agents", default="random,sac-gems")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"env {args.env}, {args.episodes:,} episodes = {args.episodes * 100:,} transitions")
    print("| policy | batch | seconds | transitions/s |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as home, open_registry(Settings.resolve(home=Path(home))) as registry:
        for agent in args.agents.split(","):
            quality = "random" if agent == "random" else "medium"
            if agent != "random":
                promote_tiny_checkpoint(registry, agent, args.env)
            for batch in (int(b) for b in args.batch.split(",")):
                start = time.perf_counter()
                dataset = collect_dataset(registry, CollectRequest(args.env, quality, args.episodes, seed=0,
                                                                   batch_size=batch))
                elapsed = time.perf_counter() - start
                print(f"| {agent} | {batch:,} | {elapsed:.1f} | {dataset.transitions / elapsed:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
