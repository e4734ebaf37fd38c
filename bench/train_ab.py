"""One-run A/B of online training: the code at a base commit against this working tree, solo
and population training steps/s through each side's trainer, interleaved step by step (before issue 21 a
solo run had its own loop, `Trainer`, beside `PopulationTrainer`; after it `Trainer` is both, K = 1 for a
solo run: this script drives whichever the side has).

Usage: python bench/train_ab.py [--base HEAD~1] [--agent sac-topk-ideal] [--population 6] [--steps 30]
                                [--warmup 3] [--env focused_topdown] [--check-same] [--device cpu]

Each side runs the real loop in its own worker process (the base commit's source is extracted with
`git archive` to a temporary folder and put first on the worker's PYTHONPATH; the working tree's side
imports the installed package), with its own registry and metrics log (`<home>/logs`, CSV and
TensorBoard as `slatectl train` writes them). A worker's progress reporter stops the loop after every
learning-phase step and waits for the driver, which lets one side make one step, then the other, and
again (the order alternates each round), so a change of machine load falls on both alike. A step's time
is from the driver's "go" to the loop's next progress report: one episode, one update, the metrics log
and the heartbeat. The random phase (`--random-steps`, one batch) and `--warmup` steps are not timed;
validation and saves fall outside the timed window.

`--check-same` instead trains the same small run to the end on both sides (solo: `--agent`, with the
inputs it pretrains; population: slateq, K seeds of --env) and compares every checkpoint's SHA-256: equal files
mean the same seed gives the same weights bit for bit.

Prints a Markdown table: steps/s of each side and working tree ÷ base in steps per wall second, per
second of the worker's CPU time (on a shared machine the wall rate also measures the neighbours), and by
median step time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: slatectl's installed layout maps these top-level folders into the package (pyproject.toml).
MAPPED = {"registry": "registry", "storage": "storage", "configs": "configs"}


# ---------------------------------------------------------------------------------------------- worker
class Gate:
    """A progress reporter that pauses the loop after each step until the driver says "go"."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.cpu_started = 0.0

    def message(self, text: str) -> None:
        pass

    def start(self, total: int, first: int, random_steps: int) -> None:
        pass

    def advance(self, progress) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        elapsed = None if self.started is None else now - self.started
        print(json.dumps({"step": progress.step, "seconds": elapsed, "cpu": cpu - self.cpu_started}), flush=True)
        if sys.stdin.readline().strip() != "go":
            raise KeyboardInterrupt  # the driver is done with this side
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        pass


def _configs(args, population: int, overrides: list[str]):
    """Solo: the agent on --env. Population: K members, the six envs × ⌈K/6⌉ seeds (--check-same: slateq,
    --env, two seeds)."""
    from slatectl.sim.config import env_names
    from slatectl.train.config import resolve_run_config
    from slatectl.train.population import population_configs

    training = {"max_steps": args.max_steps, "device": args.device}
    if not population:
        return [resolve_run_config(args.agent, args.env, overrides=overrides, cli_training=training)]
    envs = [args.env] if args.check_same else env_names()
    base = [resolve_run_config(args.agent, env, overrides=overrides, cli_training=training) for env in envs]
    return population_configs(base, list(range(1, 1 + -(-population // len(base)))))[:population]


def worker(args) -> None:
    import torch

    from slatectl.agents import AGENTS
    from slatectl.registry import open_registry
    from slatectl.settings import Settings
    from slatectl.train import population as population_module
    from slatectl.train.loop import Trainer

    # a base commit before issue 21 has a separate population trainer; after it, Trainer is the one engine
    population_trainer = getattr(population_module, "PopulationTrainer", Trainer)

    torch.set_num_threads(args.threads)
    home = Path(args.home)
    if args.check_same:
        overrides = ["training.random_steps=10", "training.val_every=10", "training.val_episodes=8",
                     "training.test_episodes=8", "training.random_phase_batch=10", "agent.batch_size=4",
                     "agent.capacity=50", "training.save_every=10", "logged.episodes=200", "gems.max_epochs=1",
                     "gems.max_slates=4000", "mf.max_batches=30", "mf.eval_every_batches=10"]
        reporter = None
    else:
        overrides = [f"training.random_steps={args.random_steps}", f"training.random_phase_batch={args.random_steps}",
                     "training.val_every=100000", "training.save_every=0", "agent.capacity=200",
                     "logged.episodes=200", "gems.max_epochs=1", "gems.max_slates=4000"]
        reporter = Gate()
    defaults = AGENTS[args.agent].params_cls()
    if defaults.capacity == defaults.batch_size:  # on-policy (REINFORCE): its replay must hold one batch exactly
        batch = [o.split("=")[1] for o in overrides if o.startswith("agent.batch_size=")]
        overrides = [o for o in overrides if not o.startswith("agent.capacity=")] + [f"agent.capacity={b}" for b in batch]
    configs = _configs(args, args.population, overrides)
    with open_registry(Settings.resolve(home=home)) as registry:
        try:
            if args.population:
                population_trainer(registry, configs, reporter, logs_dir=home / "logs").run(command="bench")
            else:
                Trainer(registry, configs[0], reporter, logs_dir=home / "logs").run(command="bench")
        except KeyboardInterrupt:
            pass
        if args.check_same:
            hashes = [[c.step, c.sha256] for run in sorted(registry.list_runs(), key=lambda r: r.id)
                      for c in registry.list_checkpoints(run_id=run.id)]
            print(json.dumps({"checkpoints": hashes}), flush=True)


def start_worker(args, population: int, home: Path, pythonpath: str | None) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--home", str(home), "--population", str(population),
               "--agent", args.agent, "--env", args.env, "--max-steps", str(args.max_steps), "--device", args.device,
               "--random-steps", str(args.random_steps), "--threads", str(args.threads)]
    if args.check_same:
        command.append("--check-same")
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=home)


def read_message(process: subprocess.Popen) -> dict:
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker ended early (exit code {process.wait()}); run it alone to see why")
        if line.startswith("{"):
            return json.loads(line)


def interleaved(args, population: int, base_path: str, tmp: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    workers = {}
    for name, path in (("base", base_path), ("tree", None)):  # one after the other: one busy process at a time
        workers[name] = start_worker(args, population, tmp / f"{name}-{population}", path)
        read_message(workers[name])  # the first report: the random phase is done, the loop waits
    times: dict[str, list[float]] = {name: [] for name in workers}
    cpu: dict[str, list[float]] = {name: [] for name in workers}
    for round_ in range(args.warmup + args.steps):
        order = list(workers) if round_ % 2 == 0 else list(reversed(workers))
        for name in order:
            workers[name].stdin.write("go\n")
            workers[name].stdin.flush()
            report = read_message(workers[name])
            if round_ >= args.warmup:
                times[name].append(report["seconds"])
                cpu[name].append(report["cpu"])
    for process in workers.values():
        process.stdin.write("stop\n")
        process.stdin.flush()
        process.wait(timeout=600)
    return times, cpu


def check_same(args, population: int, base_path: str, tmp: Path) -> tuple[list, list]:
    results = []
    for name, path in (("base", base_path), ("tree", None)):
        process = start_worker(args, population, tmp / f"same-{name}-{population}", path)
        results.append(read_message(process)["checkpoints"])
        process.wait(timeout=1200)
    return results[0], results[1]


def extract_base(rev: str, folder: Path) -> str:
    """The source at `rev` in `folder`, laid out as the installed package (mapped folders linked in)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    for name, source in MAPPED.items():
        link = folder / "slatectl" / name
        if not link.exists():
            link.symlink_to(folder / source, target_is_directory=True)
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare against (default HEAD~1)")
    parser.add_argument("--agent", default="sac-topk-ideal")
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--population", type=int, default=6, help="members of the population rows (0: solo only)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side and row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--random-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--check-same", action="store_true", help="compare checkpoints instead of timing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.max_steps = 30 if args.check_same else args.random_steps + args.warmup + args.steps + 10
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base_rev = extract_base(args.base, tmp / "base-src")
        base_path = str(tmp / "base-src")
        tree_rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        print(f"base {args.base} ({base_rev}) against the working tree ({tree_rev}); {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {args.threads} torch thread(s)")
        sizes = [0] + ([args.population] if args.population else [])
        if args.check_same:
            for population in sizes:
                if population:
                    args.agent = "slateq"
                base, tree = check_same(args, population, base_path, tmp)
                same = base == tree and bool(base)
                print(f"{'population ' + str(population) if population else 'solo ' + args.agent}: "
                      f"{len(base)} checkpoints, {'identical' if same else 'DIFFERENT'} SHA-256")
            return
        print("\n| run | base steps/s | working tree steps/s | tree ÷ base (wall) | tree ÷ base (CPU time) | "
              "tree ÷ base (median step) |")
        print("|---|---:|---:|---:|---:|---:|")
        for population in sizes:
            times, cpu = interleaved(args, population, base_path, tmp)
            rate = {name: len(t) / sum(t) for name, t in times.items()}
            cpu_rate = {name: len(t) / sum(t) for name, t in cpu.items()}
            median = {name: statistics.median(t) for name, t in times.items()}
            label = f"population, K = {population}" if population else "solo"
            print(f"| {label} ({args.agent}) | {rate['base']:.2f} | {rate['tree']:.2f} | {rate['tree'] / rate['base']:.3f} | "
                  f"{cpu_rate['tree'] / cpu_rate['base']:.3f} | {median['base'] / median['tree']:.3f} |")
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
