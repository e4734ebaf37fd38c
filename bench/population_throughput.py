"""Population training throughput of SAC+GeMS: training steps/s (one episode + one update per member and
step, the reference's step) summed over the K members and per member, against a solo run (a population
of one, as `slatectl train` runs it), at each torch thread count asked for — all in one process, in
interleaved rounds (one step of the solo run, then one step of each population, and again), so the rows
compare under the same machine load.

Usage: python bench/population_throughput.py [--sizes 6,12,60] [--threads 1,2] [--steps 20]
                                             [--device cpu|cuda] [--same-env 6] [--quick]
K members are the six environments × ⌈K/6⌉ seeds (K = 1: focused_topdown; K = 60: six envs × ten seeds);
`--same-env K` adds rows of K seeds of one env. Per thread count: the solo run (K = 1 on focused_topdown)
and each K, all through the trainer's code path (`play_member_episodes`, one replay per member,
`stack_batches`, `StackedSAC.update`), a step of each in turn. GeMS decoders are
randomly initialised per member (weights do not change the cost); each replay starts with one batch of
random-phase episodes and holds at most 200 episodes (sampling does not depend on the capacity; the
reference's 10,000 per member would need ≈ 12 GB at K = 60). Timing starts after one warm-up step of each; on
CUDA every timed interval ends with a device synchronisation. `--quick` (a dry run of the code path,
e.g. on CPU before a GPU script): 2 timed steps.

Prints one Markdown table (aggregate and per-member steps/s, × the solo run at the same thread count,
acting / update share, update time per member), then the ratio of the population at its best thread
count to the solo run at its best, and the Amdahl bound: with acting free, a member's step would still
cost its share of the stacked update, so aggregate/solo ≤ solo step time / (update time per member).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import torch

from slatectl.agents.sac import StackedSAC
from slatectl.sim.config import env_names
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.episodes import member_episodes, play_member_episodes, stack_batches
from slatectl.train.replay import EpisodeReplay
from train_throughput import build_sac_gems  # bench/ is on sys.path when a script here runs

#: Replay capacity per member in the benchmark (episodes).
BENCH_CAPACITY = 200


@dataclass
class Timing:
    steps: int
    acting: float  # seconds, summed over the timed steps
    updating: float  # seconds (replay sampling, batch stacking and the update)

    @property
    def steps_per_s(self) -> float:
        """Training steps/s of one member (the population makes this many for every member)."""
        return self.steps / (self.acting + self.updating)

    def share(self) -> str:
        total = self.acting + self.updating
        return f"{self.acting / total:.0%} / {self.updating / total:.0%}"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_member(env, seed: int):
    torch.manual_seed(seed)
    return build_sac_gems(env)


def start_population(names: list[str], device: str = "cpu"):
    """A SAC+GeMS population of one member per env name (member k seeded k, its episodes seeded k + 1)
    whose replays hold one random-phase batch: (agent, envs, seeds, generators, replays)."""
    envs_by_name = {name: make_env(name) for name in set(names)}
    members = [build_member(envs_by_name[name], k) for k, name in enumerate(names)]
    params = members[0][1]
    agent = StackedSAC([a for a, _ in members]).to(device)
    envs = MemberEnvs([envs_by_name[name] for name in names], device)  # as PopulationTrainer: on the agent's device
    seeds = list(range(1, len(names) + 1))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    replays = [EpisodeReplay(BENCH_CAPACITY, params.batch_size, device) for _ in names]
    first = play_member_episodes(envs, agent, torch.arange(params.batch_size), seeds, "random", generators)
    for k, replay in enumerate(replays):
        replay.add(member_episodes(first, k))
    return agent, envs, seeds, generators, replays


class PopulationRun:
    """A population through the population code path: `step` plays one episode and makes one update per member."""

    def __init__(self, names: list[str], device: str):
        self.agent, self.envs, self.seeds, self.generators, self.replays = start_population(names, device)
        self.device = device

    def step(self, step: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        episodes = play_member_episodes(self.envs, self.agent, torch.arange(step, step + 1), self.seeds, "explore",
                                        self.generators)
        for k, replay in enumerate(self.replays):
            replay.add(member_episodes(episodes, k))
        synchronize(self.device)
        t1 = time.perf_counter()
        batch = stack_batches([r.sample(g) for r, g in zip(self.replays, self.generators)])
        self.agent.update(batch.to(self.device), self.generators)
        synchronize(self.device)
        return t1 - t0, time.perf_counter() - t1


def time_interleaved(runs: list, steps: int) -> list[Timing]:
    """One warm-up step of every run, then `steps` rounds of one step of each run in turn: a change of
    machine load during the measurement falls on every run alike, so their ratios hold."""
    totals = [[0.0, 0.0] for _ in runs]
    for step in range(steps + 1):
        for run, total in zip(runs, totals):
            acting, updating = run.step(step)
            if step:  # step 0 is the warm-up
                total[0] += acting
                total[1] += updating
    return [Timing(steps, acting, updating) for acting, updating in totals]


def population_rows(sizes: list[int], same_env: list[int]) -> list[tuple[str, list[str]]]:
    six = env_names()
    rows = []
    for k in sizes:
        names = [six[i % 6] for i in range(k)]
        label = f"{min(k, 6)} env(s) × {-(-k // 6)} seed(s)" if k > 1 else f"{six[0]} × 1 seed"
        rows.append((label, names))
    rows += [(f"{six[0]} × {k} seeds", [six[0]] * k) for k in same_env]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="6,12,60", help="population sizes K (six envs × seeds)")
    parser.add_argument("--same-env", default="", help="population sizes of one env × K seeds")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    parser.add_argument("--threads", default=None, help="torch thread counts, e.g. 1,2 (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="2 timed steps per row (a dry run)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    steps = 2 if args.quick else args.steps
    sizes = [int(s) for s in args.sizes.split(",") if s]
    same_env = [int(s) for s in args.same_env.split(",") if s]
    threads = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU"
    print(f"machine: {device_name}, {os.cpu_count()} CPU(s), torch {torch.__version__}, device {args.device}, "
          f"{steps} timed steps per row after a warm-up step, load average at start "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    print("| run | K | torch threads | aggregate steps/s | per-member steps/s | × solo (same threads) "
          "| acting / update share | update per member (ms) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    solo_rate: dict[int, float] = {}
    solo_step_s: dict[int, float] = {}
    best_population: dict[int, tuple[float, int]] = {}  # K → (aggregate steps/s, threads)
    update_per_member: dict[tuple[int, int], float] = {}
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        rows = population_rows(sizes, same_env)
        solo, *populations = time_interleaved(
            [PopulationRun(env_names()[:1], args.device)] + [PopulationRun(names, args.device) for _, names in rows],
            steps)
        solo_rate[n_threads] = solo.steps_per_s
        solo_step_s[n_threads] = 1 / solo.steps_per_s
        print(f"| solo run (a population of one) | 1 | {n_threads} | {solo.steps_per_s:.2f} | {solo.steps_per_s:.2f} "
              f"| 1.00 | {solo.share()} | {solo.updating / steps * 1e3:.0f} |", flush=True)
        for (label, names), timing in zip(rows, populations):
            K = len(names)
            aggregate = timing.steps_per_s * K
            per_member_update = timing.updating / steps / K
            update_per_member[(K, n_threads)] = per_member_update
            if aggregate > best_population.get(K, (0.0, 0))[0]:
                best_population[K] = (aggregate, n_threads)
            print(f"| stacked, {label} | {K} | {n_threads} | {aggregate:.2f} | {timing.steps_per_s:.2f} "
                  f"| {aggregate / solo.steps_per_s:.2f} | {timing.share()} | {per_member_update * 1e3:.0f} |",
                  flush=True)
    best_solo_threads = max(solo_rate, key=solo_rate.get)
    best_solo = solo_rate[best_solo_threads]
    print(f"\nsolo run at its best: {best_solo:.2f} steps/s ({best_solo_threads} thread(s))")
    for K, (aggregate, n_threads) in best_population.items():
        bound = solo_step_s[best_solo_threads] / update_per_member[(K, n_threads)]
        print(f"K = {K}: population at its best ({n_threads} thread(s)) {aggregate:.2f} steps/s = "
              f"{aggregate / best_solo:.2f} × the solo run at its best; Amdahl bound with free acting "
              f"(solo step {solo_step_s[best_solo_threads] * 1e3:.0f} ms / update per member "
              f"{update_per_member[(K, n_threads)] * 1e3:.0f} ms) = {bound:.1f} ×")


if __name__ == "__main__":
    main()
