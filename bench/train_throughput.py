"""Training throughput of SAC+GeMS: agent updates/s, env steps/s while acting, and training steps/s of
the reference's step (one episode, then one update) on a device, through the stacked agent at K = 1
(`StackedSAC`, the product's solo path: `slatectl train` runs a solo run as a population of one; K > 1 is
measured by bench/population_throughput.py, the trainer itself by bench/train_ab.py).

Usage: python bench/train_throughput.py [--device cpu|cuda] [--quick] [--env focused_topdown]
       [--updates 50] [--steps 20] [--episodes 20] [--parallel 1,10] [--threads N]
GeMS is randomly initialised (its weights do not change the cost); updates use batches of 20 episodes
from a replay of random-phase episodes, exactly as in training. As in `slatectl train`, the simulator,
the agent and the replay live on `--device` (`TopicRec.to`, `MemberEnvs`, `EpisodeReplay(device=)`). Timings end
with a read of a result (the metrics, a return), which waits for the device. Prints a Markdown table;
`--quick` is a smoke run of a few seconds.
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
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.config import default_config_dict
from slatectl.train.episodes import member_episodes, play_member_episodes, stack_batches
from slatectl.train.replay import EpisodeReplay


def build_sac_gems(env):
    """A SAC+GeMS member layout (default params, a random GeMS with the box [−2, 2]) and its params."""
    params = build_config(AGENTS["sac-gems"].params_cls, default_config_dict("sac-gems")["agent"])
    gems = build_gems(GeMSConfig()).eval()
    for p in gems.parameters():
        p.requires_grad_(False)
    latent = GeMSConfig().latent_dim
    inputs = AgentInputs(gems=gems, gems_bounds=(torch.zeros(latent), torch.full((latent,), 2.0)))
    return AGENTS["sac-gems"].build(params, env, inputs), params


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 updates, 2 steps, 2 episodes")
    parser.add_argument("--env", default="focused_topdown")
    parser.add_argument("--updates", type=int, default=None, help="timed updates (default 50)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps, 1 episode + 1 update each (default 20)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes timed per acting measurement (default 20)")
    parser.add_argument("--parallel", default="1,10", help="episodes played at once (training.parallel_episodes)")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    updates = args.updates or (3 if args.quick else 50)
    steps = args.steps or (2 if args.quick else 20)
    episodes = args.episodes or (2 if args.quick else 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    env = make_env(args.env).to(device)
    layout, params = build_sac_gems(env)
    agent = AGENTS["sac-gems"].population([layout]).to(device)
    envs, draws = MemberEnvs([env], device), [torch.Generator().manual_seed(0)]

    def play(user_ids: torch.Tensor, seed: int, mode: str):
        return member_episodes(play_member_episodes(envs, agent, user_ids, [seed], mode, draws), 0)

    def update() -> None:  # returns floats: ends with one read of the metrics
        agent.update(stack_batches([replay.sample(draws[0])]), draws)

    replay = EpisodeReplay(params.capacity, params.batch_size, device)
    replay.add(play(torch.arange(100), 1, "random"))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{platform.machine()} {platform.processor()}".strip()
    print(f"device: {args.device} ({name}), {torch.get_num_threads()} torch threads, torch {torch.__version__}, env {args.env}")
    print("| measure | value |")
    print("|---|---:|")
    update()  # warm-up
    times = []
    for _ in range(updates):
        start = time.perf_counter()
        update()
        times.append(time.perf_counter() - start)
    print(f"| SAC+GeMS updates/s (batch 20 episodes = 2,000 transitions, median of {updates}) | {1 / statistics.median(times):,.1f} |")
    for parallel in (int(p) for p in args.parallel.split(",")):
        rounds = max(1, episodes // parallel)
        play(torch.arange(parallel), 2, "explore")  # warm-up
        start = time.perf_counter()
        for r in range(rounds):
            played = play(torch.arange(r * parallel, (r + 1) * parallel), 2, "explore")
            float(played.rewards.sum())  # wait for the device, as the loop's return read does
        elapsed = time.perf_counter() - start
        print(f"| env steps/s acting with the SAC+GeMS policy, {parallel} episode(s) at once | "
              f"{rounds * parallel * env.config.episode_length / elapsed:,.0f} |")
    play(torch.arange(1), 3, "explore")  # warm-up
    start = time.perf_counter()
    for step in range(steps):
        played = play(torch.arange(1000 + step, 1001 + step), 3, "explore")
        replay.add(played)
        update()
        float(played.rewards.sum())
    print(f"| solo training steps/s (1 episode + 1 update per step, as `slatectl train`; {steps} steps) | "
          f"{steps / (time.perf_counter() - start):,.2f} |")


if __name__ == "__main__":
    main()
