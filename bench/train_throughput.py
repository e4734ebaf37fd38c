"""Training throughput of SAC+GeMS on CPU: agent updates/s and env steps/s while collecting episodes.

Usage: python bench/train_throughput.py [--env focused_topdown] [--updates 50] [--episodes 20]
       [--parallel 1,10] [--threads N]
GeMS is randomly initialised (its weights do not change the cost); updates use batches of 20 episodes
from a replay of random-phase episodes, exactly as in training. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from slatectl.agents import AGENTS, AgentInputs
from slatectl.config_tools import build_config
from slatectl.pretrain.gems_train import GeMSConfig, build_gems
from slatectl.sim.factory import make_env
from slatectl.train.config import default_config_dict
from slatectl.train.episodes import play_episodes
from slatectl.train.replay import EpisodeReplay


def build_sac_gems(env):
    params = build_config(AGENTS["sac-gems"].params_cls, default_config_dict("sac-gems")["agent"])
    gems = build_gems(GeMSConfig()).eval()
    for p in gems.parameters():
        p.requires_grad_(False)
    latent = GeMSConfig().latent_dim
    inputs = AgentInputs(gems=gems, gems_bounds=(torch.zeros(latent), torch.full((latent,), 2.0)))
    return AGENTS["sac-gems"].build(params, env, inputs), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=20, help="episodes timed per collection measurement")
    parser.add_argument("--parallel", default="1,10", help="episodes collected at once (training.parallel_episodes)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = make_env(args.env)
    agent, params = build_sac_gems(env)
    replay = EpisodeReplay(params.capacity, params.batch_size)
    replay.add(play_episodes(env, agent, torch.arange(100), seed=1, mode="random"))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, env {args.env}")
    print("| measure | value |")
    print("|---|---:|")
    agent.update(replay.sample(), lambda loss: loss.backward())  # warm-up
    times = []
    for _ in range(args.updates):
        batch = replay.sample()
        start = time.perf_counter()
        agent.update(batch, lambda loss: loss.backward())
        times.append(time.perf_counter() - start)
    print(f"| SAC+GeMS updates/s (batch 20 episodes = 2,000 transitions, median of {args.updates}) | {1 / statistics.median(times):,.1f} |")
    collect_rates = {}
    for parallel in (int(p) for p in args.parallel.split(",")):
        rounds = max(1, args.episodes // parallel)
        start = time.perf_counter()
        for r in range(rounds):
            play_episodes(env, agent, torch.arange(r * parallel, (r + 1) * parallel), seed=2, mode="explore")
        elapsed = time.perf_counter() - start
        steps = rounds * parallel * env.config.episode_length
        collect_rates[parallel] = steps / elapsed
        print(f"| env steps/s collecting with the SAC+GeMS policy, {parallel} episode(s) at once | {steps / elapsed:,.0f} |")
    per_update = statistics.median(times)
    for parallel, rate in collect_rates.items():
        print(f"| estimated training steps/s at parallel_episodes={parallel} (1 episode + 1 update each) | "
              f"{1 / (per_update + env.config.episode_length / rate):,.2f} |")


if __name__ == "__main__":
    main()
