"""Resume-state and checkpoint sizes, and the projected disk use of a long run (issue: bounded disk).

Usage: python bench/resume_state_size.py [--agents sac-gems,sac-topk-ideal,slateq] [--steps 10000,100000]
       [--save-every 1000] [--keep-resume 1]

For each agent (default hyper-parameters; GeMS randomly initialised at its default size: weights do not
change the size), the replay is filled synthetically with as many episodes as a run has played after
`steps` steps (the replay keeps the last `capacity` = 10,000), then the resume state exactly as training
saves it (a `ResumeState`, as `Trainer._save` builds it) and the checkpoint (the agent's weights) are serialised with
torch.save, as the artifact store does. Nothing is trained and nothing is written to disk.
Projected disk of a run of S steps with --save-every N and --keep-resume K:
S/N checkpoints + K resume states (the newest ones, at the end of the run). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io

import torch

from slatectl.agents import AGENTS, AgentInputs
from slatectl.agents.base import EpisodeBatch
from slatectl.config_tools import build_config
from slatectl.pretrain.gems_train import GeMSConfig, build_gems
from slatectl.sim.factory import make_env
from slatectl.train.checkpoints import ResumeState
from slatectl.train.config import default_config_dict
from slatectl.train.evaluation import Evaluation
from slatectl.train.replay import EpisodeReplay

MB = 1e6


def serialized_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def build(name: str, env):
    spec = AGENTS[name]
    params = build_config(spec.params_cls, default_config_dict(name)["agent"])
    gems = build_gems(GeMSConfig()).eval()
    latent = GeMSConfig().latent_dim
    inputs = AgentInputs(gems=gems, gems_bounds=(torch.zeros(latent), torch.ones(latent)), mf=torch.randn(1000, 20))
    return spec.build(params, env, inputs), params


def synthetic_episodes(n: int, env, action_dim: int) -> EpisodeBatch:
    cfg = env.config
    H, K = cfg.episode_length, cfg.slate_size
    slates = torch.randint(0, cfg.num_items, (n, H + 1, K))
    return EpisodeBatch(slates=slates, clicks=torch.randint(0, 2, (n, H + 1, K)).float(),
                        actions=torch.randn(n, H, action_dim), rec_slates=slates[:, 1:],
                        rewards=torch.randint(0, 4, (n, H)).float(), user_states=torch.randn(n, H + 1, cfg.embedding_dim))


def fill(replay: EpisodeReplay, steps: int, env, action_dim: int, chunk: int = 1000) -> None:
    """Add `steps` episodes (one per training step), in chunks; the replay keeps the newest `capacity`."""
    added = 0
    while added < steps:
        n = min(chunk, steps - added, replay.capacity)
        replay.add(synthetic_episodes(n, env, action_dim))
        added += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", default="sac-gems,sac-topk-ideal,slateq")
    parser.add_argument("--steps", default="100,10000,100000")
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--keep-resume", type=int, default=1)
    args = parser.parse_args()
    env = make_env("focused_topdown")
    steps_list = [int(s) for s in args.steps.split(",")]
    longest = max(steps_list)
    print(f"| agent | checkpoint (MB) | " + " | ".join(f"resume state at {s:,} steps (MB)" for s in steps_list)
          + f" | projected disk, {longest:,} steps, --save-every {args.save_every:,}, --keep-resume {args.keep_resume} (MB) |")
    print("|---|---:|" + "---:|" * len(steps_list) + "---:|")
    for name in args.agents.split(","):
        torch.manual_seed(0)
        agent, params = build(name, env)
        checkpoint = serialized_bytes(agent.state_dict())
        resume = {}
        for steps in steps_list:
            replay = EpisodeReplay(params.capacity, params.batch_size)
            fill(replay, steps, env, agent.action_dim)
            state = ResumeState(steps, agent.state_dict(), {n: o.state_dict() for n, o in agent.optimizers().items()},
                                replay.state_dict(), torch.get_rng_state(), Evaluation(0.0, 0.0, 1))
            resume[steps] = serialized_bytes(state.to_dict())
        total = (longest // args.save_every) * checkpoint + args.keep_resume * resume[longest]
        print(f"| {name} | {checkpoint / MB:,.1f} | " + " | ".join(f"{resume[s] / MB:,.1f}" for s in steps_list)
              + f" | {total / MB:,.0f} |")


if __name__ == "__main__":
    main()
