"""Collection speed of this tree against another commit, interleaved: transitions/s of `record_dataset`
(policy + simulation into the dataset's arrays) for each agent and behaviour policy, old and new run in
alternation (A B A B …, one process per run), so a change of load on a shared machine hits both.

Usage: python bench/collect_ab.py --old REF [--agents random,sac-gems,slateq] [--act greedy,sample]
       [--episodes 2000] [--batch 1000] [--threads 1] [--rounds 3]
REF's tree is exported with `git archive` to a temporary folder and imported from there (PYTHONPATH);
the agents have their built (untrained) weights, which do not change the cost of acting. Prints one
Markdown table: the median of the rounds per row and new/old, by wall time and by the process's CPU
time (transitions per CPU second: less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(agent_name: str, act: str, episodes: int, batch: int, threads: int) -> None:
    """One timing, in whichever tree is first on the path (the old one drives the solo agent)."""
    import torch

    from slatectl.agents.pretrained import AgentInputs
    from slatectl.collect import collector
    from slatectl.collect.recorder import record_dataset
    from slatectl.pretrain.gems import GeMS
    from slatectl.train.assembly import build_agent
    from slatectl.train.config import resolve_run_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    inputs = AgentInputs(gems=GeMS(num_items=1000, slate_size=10, item_dim=20, latent_dim=32),
                         gems_bounds=(torch.full((32,), 0.1), torch.full((32,), 2.0)), mf=torch.randn(1000, 20))
    env, agent = build_agent(resolve_run_config(agent_name, "focused_topdown"), inputs)
    agent.eval()
    if hasattr(collector, "stacked_form"):
        agent = collector.stacked_form(agent_name, agent)
    mode = {"sample": "explore", "greedy": "greedy"}[act]
    record_dataset(env, agent, batch, 0, batch, mode=mode)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    record_dataset(env, agent, episodes, 0, batch, mode=mode)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"transitions_per_s": episodes * 100 / wall, "per_cpu_s": episodes * 100 / cpu,
                      "file": collector.__file__}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=False)
    parser.add_argument("--agents", default="random,sac-gems,slateq")
    parser.add_argument("--act", default="greedy,sample")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("AGENT", "ACT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.episodes, args.batch, args.threads)
        return
    if not args.old:
        parser.error("--old REF is required")
    load = "load average %.2f %.2f %.2f" % os.getloadavg()
    print(f"collection A/B: {args.old} (old) against this tree (new), {args.episodes:,} episodes in batches of "
          f"{args.batch:,}, {args.threads} torch thread(s), {args.rounds} interleaved rounds; {load} at start")
    with tempfile.TemporaryDirectory() as old_tree:
        archive = subprocess.run(["git", "archive", args.old], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old_tree], input=archive, check=True)
        trees = {"old": old_tree, "new": str(ROOT)}
        rows = [(a, act) for a in args.agents.split(",") for act in args.act.split(",")]
        rates: dict[tuple, dict[str, list[float]]] = {row: {"old": [], "new": []} for row in rows}
        cpu_rates: dict[tuple, dict[str, list[float]]] = {row: {"old": [], "new": []} for row in rows}
        for _ in range(args.rounds):
            for row in rows:
                for side, tree in trees.items():
                    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(args.threads),
                           "OMP_WAIT_POLICY": "PASSIVE"}
                    out = subprocess.run([sys.executable, __file__, "--worker", *row, "--episodes", str(args.episodes),
                                          "--batch", str(args.batch), "--threads", str(args.threads)],
                                         env=env, check=True, capture_output=True, text=True).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    assert result["file"].startswith(tree), result["file"]  # timed the tree it meant to
                    rates[row][side].append(result["transitions_per_s"])
                    cpu_rates[row][side].append(result["per_cpu_s"])
    print("| agent | --act | old transitions/s | new transitions/s | new/old | old per CPU s | new per CPU s | new/old |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row, r in rates.items():
        old, new = statistics.median(r["old"]), statistics.median(r["new"])
        old_cpu, new_cpu = statistics.median(cpu_rates[row]["old"]), statistics.median(cpu_rates[row]["new"])
        print(f"| {row[0]} | {row[1]} | {old:,.0f} | {new:,.0f} | {new / old:.2f}× | {old_cpu:,.0f} | {new_cpu:,.0f} | "
              f"{new_cpu / old_cpu:.2f}× |")
    print("rounds (old / new):", {f"{a}/{act}": {s: [round(x) for x in v] for s, v in r.items()}
                                  for (a, act), r in rates.items()})


if __name__ == "__main__":
    main()
