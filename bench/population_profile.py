"""Where one stacked SAC+GeMS training step spends its time, by phase, per member (ms), at each K and
torch thread count — the breakdown in docs/population.md.

Usage: python bench/population_profile.py [--sizes 1,6,12] [--threads 1,2] [--steps 3]
Members are the six environments × seeds (as bench/population_throughput.py). Each phase is timed by
wrapping the method that does it (wall clock, CPU: every op is synchronous), so the code measured is the
training code unchanged:
- acting (one episode of 100 steps): simulator step (`MemberEnvs.step`), actor GRU (`observe`), policy
  (`act` without ranking), GeMS decoding (`rank`), rest (episode bookkeeping in `play_member_episodes`);
- update: replay sampling + `stack_batches`, belief GRUs forward (`encode_episodes`, actor and critic),
  policy head forward, Q forwards (target, critic, actor step), noise draws, the three backward passes,
  the three Adam steps, rest (losses, Polyak, metrics).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import torch

from slatectl.sim.config import env_names
from slatectl.train.episodes import member_episodes, play_member_episodes, stack_batches
from population_throughput import start_population  # bench/ is on sys.path when a script here runs


class PhaseClock:
    """Accumulates wall time per phase; `wrap` times a bound method under a phase name (a callable
    phase name picks the name per call)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, owner, attribute: str, phase):
        inner = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if self.on:
                    self.seconds[phase() if callable(phase) else phase] += time.perf_counter() - started
        setattr(owner, attribute, timed)


def profile(names: list[str], steps: int) -> tuple[dict[str, float], dict[str, float]]:
    agent, envs, seeds, generators, replays = start_population(names)

    acting, updating = PhaseClock(), PhaseClock()
    acting.wrap(envs, "step", "simulator step")
    acting.wrap(agent, "observe", "actor GRU (observe)")
    acting.wrap(agent, "rank", "GeMS decoding (rank)")
    acting.wrap(agent, "act", "policy + decoding (act)")
    q_calls = iter(())
    backward_calls = iter(())
    updating.wrap(agent, "encode_episodes", "belief GRUs forward")
    updating.wrap(agent, "_policy_head", "policy head forward")
    updating.wrap(agent, "_q_values", lambda: next(q_calls))
    updating.wrap(agent, "_noise", "noise draws")
    for name, optimizer in agent.optimizers.items():
        updating.wrap(optimizer, "step", f"Adam step ({name})")

    def backward(loss):
        started = time.perf_counter()
        loss.backward()
        if updating.on:
            updating.seconds[next(backward_calls)] += time.perf_counter() - started

    totals: dict[str, float] = defaultdict(float)
    for step in range(steps + 1):
        on = step > 0  # the first step is a warm-up
        acting.on = on
        t0 = time.perf_counter()
        episodes = play_member_episodes(envs, agent, torch.arange(step, step + 1), seeds, "explore", generators)
        t1 = time.perf_counter()
        acting.on = False
        batch = stack_batches([r.sample(g) for r, g in zip(replays, generators)])
        for k, replay in enumerate(replays):
            replay.add(member_episodes(episodes, k))
        t2 = time.perf_counter()
        q_calls = iter(["Q target forward", "Q forward (critic)", "Q forward (actor step)"])
        backward_calls = iter(["critic backward", "actor backward", "temperature backward"])
        updating.on = on
        agent.update(batch, generators, backward)
        t3 = time.perf_counter()
        updating.on = False
        if on:
            totals["acting"] += t1 - t0
            updating.seconds["replay sampling + stack_batches"] += t2 - t1
            totals["update"] += t3 - t1
    act = dict(acting.seconds)
    act["policy (act, without decoding)"] = act.pop("policy + decoding (act)") - act["GeMS decoding (rank)"]
    act["rest of the episode loop"] = totals["acting"] - sum(act.values())
    act["acting, total"] = totals["acting"]
    upd = dict(updating.seconds)
    upd["rest (losses, Polyak, metrics)"] = totals["update"] - sum(upd.values())
    upd["update, total"] = totals["update"]
    K = len(names)
    return ({k: v / steps / K * 1e3 for k, v in act.items()}, {k: v / steps / K * 1e3 for k, v in upd.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,6,12")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per column")
    args = parser.parse_args()
    six = env_names()
    columns = []
    results = []
    for n_threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(n_threads)
        for K in (int(k) for k in args.sizes.split(",")):
            columns.append(f"K={K}, {n_threads} thr")
            results.append(profile([six[i % 6] for i in range(K)], args.steps))
    print(f"{os.cpu_count()} CPU(s), torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}; "
          f"ms per member and training step, {args.steps} timed steps after a warm-up step")
    print("| phase | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for part in (0, 1):
        for phase in results[0][part]:
            print(f"| {phase} | " + " | ".join(f"{r[part].get(phase, 0.0):.1f}" for r in results) + " |")


if __name__ == "__main__":
    main()
