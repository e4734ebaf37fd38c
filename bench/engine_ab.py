"""Training steps/s of the real `slatectl` trainer in two checkouts, A and B, measured in alternating rounds.

Usage: python bench/engine_ab.py --a PATH_A --b PATH_B [--rounds 3] [--steps 40] [--sizes 1,6] [--threads 1]

Each checkout is a source tree of this repository (e.g. a `git worktree` of the previous commit, and this
one). Every round runs, in turn, one subprocess per (checkout, K) with that tree first on PYTHONPATH:
it trains K runs of SAC+GeMS on focused_topdown for `--steps` learning steps (after a 10-episode random
phase, one validation at the end on 8 users, no test beyond it) through the checkout's own trainer —
`Trainer(registry, configs).run()` where K runs are one population, and for K = 1 the checkout's solo
path (before issue 21: `Trainer(registry, config).run()`, the solo loop; after: the same call, a stack of
one). The GeMS and logged data are built once in a shared home first, so no timed round pretrains.
A subprocess reports the learning-phase steps/s per member from its reporter's clock (first to last
learning step; validation and the final test excluded). Rounds alternate the order of A and B, so both
see the same machine load; the table gives the median per cell and B / A.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import importlib.util, json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[4]))
import slatectl
# registry/, storage/ and configs/ install as slatectl.registry, … (package-dir): take the checkout's own,
# not those an editable install of another checkout maps
tree = Path(os.environ["PYTHONPATH"])
for name in ("registry", "storage", "configs"):
    spec = importlib.util.spec_from_file_location(f"slatectl.{name}", tree / name / "__init__.py",
                                                  submodule_search_locations=[str(tree / name)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"slatectl.{name}"] = module
    spec.loader.exec_module(module)
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train import loop
from slatectl.train.population import population_configs

home, steps, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
SMALL = ["training.random_steps=10", "training.random_phase_batch=10", "training.val_episodes=8",
         "training.test_episodes=8", "logged.episodes=200", "gems.max_epochs=1", "gems.max_slates=4000"]
total = 10 + steps
config = resolve_run_config("sac-gems", "focused_topdown", overrides=SMALL + [f"training.val_every={total}"],
                            cli_training={"max_steps": total, "save_every": total})

class Clock:
    def __init__(self):
        self.marks = []
    def message(self, text): pass
    def start(self, *args): pass
    def stop(self): pass
    def advance(self, progress):
        if progress.step > 10:
            self.marks.append((progress.step, time.perf_counter()))

clock = Clock()
with open_registry(Settings.resolve(home=home)) as registry:
    if size == 1:
        trainer = loop.Trainer(registry, config, clock)
        trainer.run(command="bench")
    else:
        configs = population_configs([config], list(range(1, size + 1)))
        trainer_cls = getattr(sys.modules["slatectl.train.population"], "PopulationTrainer", None) or loop.Trainer
        trainer_cls(registry, configs, clock).run(command="bench")
# the last mark includes the final validation: use the steps before it
(first_step, first), (last_step, last) = clock.marks[0], clock.marks[-2]
print(json.dumps({"steps_per_s": (last_step - first_step) / (last - first)}))
"""


def run_child(tree: Path, home: Path, steps: int, size: int, threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "SLATECTL_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(home), str(steps), str(size), str(threads)],
                         env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        sys.exit(f"{tree} K={size} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sizes", default="1,6")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        run_child(args.b, home, 3, 1, args.threads)  # builds the logged data and the GeMS once
        for r in range(args.rounds):
            order = [("A", args.a), ("B", args.b)] if r % 2 == 0 else [("B", args.b), ("A", args.a)]
            for size in sizes:
                for label, tree in order:
                    rate = run_child(tree, home, args.steps, size, args.threads)
                    results.setdefault((label, size), []).append(rate)
                    print(f"round {r + 1}: {label} K={size}: {rate:.2f} steps/s per member", file=sys.stderr)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
          f"{args.rounds} rounds of {args.steps} learning steps\n")
    print("| K | A steps/s per member | B steps/s per member | B / A |")
    print("|---|---|---|---|")
    for size in sizes:
        a, b = statistics.median(results[("A", size)]), statistics.median(results[("B", size)])
        print(f"| {size} | {a:.2f} | {b:.2f} | {b / a:.2f}× |")


if __name__ == "__main__":
    main()
