"""Wall time and scheduling overhead of one small sweep: `--executor local --jobs 1` and `--jobs 2` vs Ray
on a local two-node cluster (a head and a worker node, one CPU each, on this machine).

    python bench/sweep_throughput.py [--steps 120] [--members-per-task 2]

The sweep: sac-gems and sac-topk-mf × focused_topdown, diffuse_mix × seeds 1, 2 (8 runs), shrunk
pretraining, tasks of `--members-per-task` runs, each executor on a fresh SQLite home (the Ray cluster is
this one machine, where SQLite is allowed). Per executor: the wall time of `slatectl sweep run`, the
tasks' own time (from the registry: claimed → finished, i.e. after the process or Ray worker started and
imported), and the scheduling overhead per task = (wall × slots − Σ task time) / tasks — the idle
slot-seconds per task: process or worker start-up, imports, the driver's start and the wait for results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ray_cluster import start_cluster  # noqa: E402  (the test's cluster helper: dedicated temp dir, ports)

from slatectl.registry import open_registry  # noqa: E402
from slatectl.settings import Settings  # noqa: E402

SHRUNK = {"training.random_steps": 100, "training.val_every": 60, "training.val_episodes": 8,
          "training.test_episodes": 8, "training.random_phase_batch": 50, "agent.batch_size": 4,
          "agent.capacity": 200, "logged.episodes": 200, "gems.max_epochs": 1, "gems.max_slates": 4000,
          "mf.max_batches": 30, "mf.eval_every_batches": 10}


def run(label: str, spec_file: Path, extra: list[str], slots: int, env: dict) -> dict:
    home = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    slatectl = str(Path(sys.executable).parent / "slatectl")
    started = time.perf_counter()
    result = subprocess.run([slatectl, "--home", str(home), "sweep", "run", str(spec_file), *extra],
                            capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{label} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    with open_registry(Settings.resolve(home=home)) as reg:
        (sweep,) = reg.list_sweeps()
        tasks = reg.sweep_tasks(sweep.id)
        busy = sum((t.finished_at - t.started_at).total_seconds() for t in tasks)
    shutil.rmtree(home, ignore_errors=True)
    return {"label": label, "wall": wall, "tasks": len(tasks), "busy": busy,
            "overhead": (wall * slots - busy) / len(tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--members-per-task", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLATECTL_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    spec = {"agents": ["sac-gems", "sac-topk-mf"], "envs": ["focused_topdown", "diffuse_mix"], "seeds": [1, 2],
            "steps": args.steps, "save_every": args.steps // 2, "set": SHRUNK,
            "members_per_task": args.members_per_task, "resources": {"num_cpus": 1}}
    spec_file = Path(tempfile.mkdtemp(prefix="sweep-bench-spec-")) / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    rows = [run(f"local --jobs {jobs}", spec_file, ["--executor", "local", "--jobs", str(jobs)], jobs, env)
            for jobs in (1, 2)]  # N = 1 and 2 workers on this machine
    cluster = start_cluster(env)
    try:
        rows.append(run("ray, 2 nodes x 1 CPU", spec_file, ["--executor", "ray", "--address", cluster.address], 2, env))
    finally:
        cluster.stop()
    print(f"{'executor':22} {'tasks':>5} {'wall s':>7} {'task s (sum)':>12} {'overhead s/task':>15}")
    for r in rows:
        print(f"{r['label']:22} {r['tasks']:5d} {r['wall']:7.1f} {r['busy']:12.1f} {r['overhead']:15.1f}")


if __name__ == "__main__":
    main()
