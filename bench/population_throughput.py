"""Population training throughput of SAC+GeMS: training steps/s (one episode + one update per member and
step, the reference's step) summed over the K members and per member, against the solo code path.

Usage: python bench/population_throughput.py [--sizes 1,6,12] [--steps 30] [--threads 1] [--device cpu]
K members are the six environments × ⌈K/6⌉ seeds (K = 1: focused_topdown), plus `--same-env K` rows
with K seeds of one env. GeMS decoders are randomly initialised per member (weights do not change the
cost); a minimal random phase (one batch of episodes per member) fills the replays first. Prints a
Markdown table with the machine, the torch thread count and the ratio to the solo run.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from slatectl.agents.sac_population import StackedSAC
from slatectl.sim.config import env_names
from slatectl.sim.factory import make_env
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.episodes import play_episodes
from slatectl.train.population import member_episodes, play_member_episodes, stack_batches
from slatectl.train.replay import EpisodeReplay
from train_throughput import build_sac_gems  # bench/ is on sys.path when a script here runs


def build_member(env, seed: int):
    torch.manual_seed(seed)
    return build_sac_gems(env)


def solo_steps_per_s(env_name: str, steps: int, device: str) -> float:
    env = make_env(env_name)
    agent, params = build_member(env, 0)
    agent.to(device)
    replay = EpisodeReplay(params.capacity, params.batch_size)
    replay.add(play_episodes(env, agent, torch.arange(params.batch_size), seed=1, mode="random", device=device))
    started = None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()  # the first step is a warm-up
        replay.add(play_episodes(env, agent, torch.arange(step, step + 1), seed=1, mode="explore", device=device))
        agent.update(replay.sample().to(device), lambda loss: loss.backward())
    return steps / (time.perf_counter() - started)


def population_steps_per_s(names: list[str], steps: int, device: str) -> tuple[float, float, float]:
    """(member steps/s, share of time acting, share updating) for members with env names `names`."""
    envs_by_name = {name: make_env(name) for name in set(names)}
    members = [build_member(envs_by_name[name], k) for k, name in enumerate(names)]
    params = members[0][1]
    agent = StackedSAC([a for a, _ in members]).to(device)
    envs = MemberEnvs([envs_by_name[name] for name in names])
    seeds = list(range(1, len(names) + 1))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    replays = [EpisodeReplay(params.capacity, params.batch_size) for _ in names]
    first = play_member_episodes(envs, agent, torch.arange(params.batch_size), seeds, "random", generators)
    for k, replay in enumerate(replays):
        replay.add(member_episodes(first, k))
    acting = updating = 0.0
    for step in range(steps + 1):
        if step == 1:
            acting = updating = 0.0  # the first step is a warm-up
        t0 = time.perf_counter()
        episodes = play_member_episodes(envs, agent, torch.arange(step, step + 1), seeds, "explore", generators)
        t1 = time.perf_counter()
        for k, replay in enumerate(replays):
            replay.add(member_episodes(episodes, k))
        batch = stack_batches([r.sample(g) for r, g in zip(replays, generators)])
        agent.update(batch.to(device), generators)
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        acting += t1 - t0
        updating += t2 - t1
    total = acting + updating
    return steps / total, acting / total, updating / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,6,12", help="population sizes K (six envs × seeds)")
    parser.add_argument("--same-env", default="6", help="population sizes of one env × K seeds ('' for none)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per K")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    six = env_names()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread(s) (shared machine), device {args.device}, "
          f"{args.steps} timed steps per row after a warm-up step")
    solo = solo_steps_per_s("focused_topdown", args.steps, args.device)
    print("| population | K | aggregate steps/s | per-member steps/s | × solo | acting / update share |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| solo run (Trainer's code path) | 1 | {solo:.2f} | {solo:.2f} | 1.00 | |")
    rows = [(f"{min(k, 6)} env(s) × {max(1, k // 6)} seed(s)", [six[i % 6] for i in range(k)] if k > 1 else [six[0]])
            for k in (int(s) for s in args.sizes.split(",") if s)]
    rows += [(f"1 env × {k} seeds", [six[0]] * k) for k in (int(s) for s in args.same_env.split(",") if s)]
    for label, names in rows:
        per_member, acting, updating = population_steps_per_s(names, args.steps, args.device)
        aggregate = per_member * len(names)
        print(f"| {label} | {len(names)} | {aggregate:.2f} | {per_member:.2f} | {aggregate / solo:.2f} | "
              f"{acting:.0%} / {updating:.0%} |", flush=True)


if __name__ == "__main__":
    main()
