"""Run a policy for many episodes, batched over users, and summarise the returns.

Everything runs on the simulator's device; the returns of a batch stay there until the end (one host
copy per rollout), so the step loop never waits for the device."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from slatectl.sim.factory import make_env
from slatectl.sim.policies import RandomSlatePolicy, ShortTermOraclePolicy, SlatePolicy
from slatectl.sim.seeds import VALIDATION_SEED
from slatectl.sim.topicrec import TopicRec


@dataclass
class RolloutStats:
    returns: torch.Tensor  # (episodes,) float64
    seconds: float

    @property
    def episodes(self) -> int:
        return int(self.returns.numel())

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std(unbiased=True)) if self.episodes > 1 else 0.0

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.episodes) if self.episodes > 1 else float("nan")


@torch.no_grad()
def run_episodes(env: TopicRec, policy: SlatePolicy, user_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """One batch of full episodes for the given users; returns their (B,) returns (on the env's device)."""
    user_ids = torch.as_tensor(user_ids, dtype=torch.int64, device=env.device)
    env.reset(user_ids, seed)
    policy.reset(user_ids, seed)
    total = torch.zeros(user_ids.shape[0], dtype=torch.float64, device=env.device)
    done = False
    while not done:
        result = env.step(policy.act(env), oracle=policy.uses_oracle)
        total += result.reward
        done = result.done
    return total


def rollout(
    env: TopicRec, policy: SlatePolicy, episodes: int, seed: int, batch_size: int = 1024,
    on_batch: Callable[[int, torch.Tensor], None] | None = None,
) -> RolloutStats:
    """Episodes 0 … episodes−1 (user id = episode index) in batches; `on_batch(done_so_far, returns)`
    gets each batch's returns on the env's device. The returned stats hold them on the CPU."""
    if episodes < 1 or batch_size < 1:
        raise ValueError("episodes and batch size must be >= 1")
    returns = []
    start = time.perf_counter()
    for first in range(0, episodes, batch_size):
        ids = torch.arange(first, min(first + batch_size, episodes), device=env.device)
        batch_returns = run_episodes(env, policy, ids, seed)
        returns.append(batch_returns)
        if on_batch is not None:
            on_batch(first + ids.numel(), batch_returns)
    all_returns = torch.cat(returns).cpu()  # waits for the device: the clock stops after the work
    return RolloutStats(returns=all_returns, seconds=time.perf_counter() - start)


#: Users of the random-policy reference return: the validation users of training (configs/training.yaml
#: val_seed), so "share of the random return" compares like with like.
RANDOM_RETURN_SEED = VALIDATION_SEED  # the random policy is compared with validation returns


def random_return(env_name: str, episodes: int = 1000) -> float:
    """Mean return of the uniform random slate policy on `env_name` (used to suggest `medium`)."""
    return rollout(make_env(env_name), RandomSlatePolicy(), episodes, RANDOM_RETURN_SEED, batch_size=episodes).mean


def oracle_return(env_name: str, episodes: int = 1000) -> float:
    """Mean return of the short-term oracle on `env_name`, on the same users as `random_return` (a level a
    learning curve is read against: it needs no training, yet a trained agent may pass it)."""
    return rollout(make_env(env_name), ShortTermOraclePolicy(), episodes, RANDOM_RETURN_SEED, batch_size=episodes).mean
