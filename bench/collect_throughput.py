"""Collection throughput: transitions/s of policy + simulation alone and of `collect_dataset` end to end
(simulate, record, copy to the host, write the npz, hash, register), by device, agent and batch size.

Usage: python bench/collect_throughput.py [--device cpu|cuda] [--env focused_topdown] [--episodes 10000]
       [--batch 1000,5000] [--agents random,sac-gems] [--threads N] [--workers 1,2] [--quick]
       [--act sample|greedy] [--encoder default|none]
The SAC+GeMS checkpoint comes from a tiny run in a throwaway registry (small logged data, one short GeMS
epoch, random-phase steps only): its weights do not change the cost of acting. `--quick`: 300 episodes,
batch 150 (seconds of collection on a CPU, plus the tiny run; for scripts and smoke runs). GPU targets:
≥ 1,000,000 transitions/s of policy + simulation with SAC+GeMS, and 10,000 episodes end to end ≤ 5 s
(`--device cuda --batch 10000`). `--workers` lists the recorder's worker counts to time (policy + simulation;
default: its default, one per torch thread on a CPU) — `--threads 2 --workers 1,2` compares one loop with
two threads against two batches at once. `--act` is the behaviour policy (collect --act; both record on worker
threads by default), `--encoder none` leaves out the encoder's features (end to end includes
encoding them; the tiny run's GeMS is the encoder). Prints one Markdown table.
"""

from __future__ import annotations

import os

# As the CLI does (slatectl/cli/__init__.py): OpenMP's passive wait, set before torch loads. With the
# default active wait, the main thread's pool (busy encoding features at N threads) spins against the
# recorder's worker threads of the next collection: measured 4-7x slower on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import platform
import tempfile
import time
from pathlib import Path

import torch

from slatectl.registry import open_registry
from slatectl.collect.collector import ACT_MODES, CollectRequest, agent_for_checkpoint, collect_dataset, random_policy_agent
from slatectl.domain import BehaviourMode, Quality
from slatectl.collect.recorder import record_dataset
from slatectl.device import resolve_device
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer

TINY = ["logged.episodes=300", "gems.max_epochs=1", "gems.max_slates=5000", "training.random_steps=4",
        "training.val_episodes=10", "training.test_episodes=10"]


def promote_tiny_checkpoint(registry, agent: str, env: str) -> int:
    config = resolve_run_config(agent, env, overrides=TINY, cli_training={"max_steps": 4, "save_every": 4})
    run_id = Trainer(registry, config).run(command="bench")[0].run_id
    checkpoint = registry.list_checkpoints(run_id=run_id)[-1]
    registry.promote_checkpoint(env, "medium", checkpoint.id)
    return checkpoint.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--batch", default="1000,5000", help="users simulated at once (collect --batch)")
    parser.add_argument("--agents", default="random,sac-gems")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", default=None, help="recorder worker counts to time, e.g. 1,2 (default: its default)")
    parser.add_argument("--quick", action="store_true", help="300 episodes, batch 150")
    parser.add_argument("--act", default="sample", choices=["sample", "greedy"])
    parser.add_argument("--encoder", default="default", choices=["default", "none"])
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.batch = 300, "150"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    card = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    load = " load average %.2f %.2f %.2f," % os.getloadavg() if hasattr(os, "getloadavg") else ""
    transitions = args.episodes * 100
    print(f"collection throughput: {device} ({card}),{load} {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, env {args.env}, {args.episodes:,} episodes = {transitions:,} transitions")
    worker_counts = [None] if args.workers is None else [int(w) for w in args.workers.split(",")]
    print("| device | policy | batch | workers | policy+sim s | policy+sim transitions/s | end-to-end s | end-to-end transitions/s |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    mode = ACT_MODES[BehaviourMode(args.act)]
    with tempfile.TemporaryDirectory() as home, open_registry(Settings.resolve(home=Path(home))) as registry:
        checkpoints = {name: promote_tiny_checkpoint(registry, name, args.env)  # the first builds the GeMS encoder
                       for name in ["sac-gems"] + [a for a in args.agents.split(",") if a not in ("random", "sac-gems")]}
        for agent_name in args.agents.split(","):
            if agent_name == "random":
                quality = Quality.RANDOM
                env, agent = random_policy_agent(args.env, device)
            else:
                quality = Quality.MEDIUM
                registry.promote_checkpoint(args.env, quality, checkpoints[agent_name])
                env, agent, _ = agent_for_checkpoint(registry, checkpoints[agent_name], device)
            for batch in (int(b) for b in args.batch.split(",")):
                record_dataset(env, agent, min(batch, args.episodes), 0, batch, mode=mode)  # warm-up (allocations, kernels)
                for workers in worker_counts:
                    start = time.perf_counter()
                    record_dataset(env, agent, args.episodes, 0, batch, workers=workers, mode=mode)  # host arrays: the device is done
                    simulated = time.perf_counter() - start
                    start = time.perf_counter()
                    dataset = collect_dataset(registry, CollectRequest(args.env, quality, args.episodes, seed=0,
                                                                       batch_size=batch, device=device, act=BehaviourMode(args.act),
                                                                       encoder=None if args.encoder == "default" else "none"))
                    end_to_end = time.perf_counter() - start  # collect's own default workers
                    print(f"| {device} | {agent_name} | {batch:,} | {'default' if workers is None else workers} | "
                          f"{simulated:.2f} | {transitions / simulated:,.0f} | {end_to_end:.2f} | "
                          f"{dataset.transitions / end_to_end:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
