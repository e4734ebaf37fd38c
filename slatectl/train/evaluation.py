"""Validation and test: the greedy policy on fixed users (seeds in `slatectl.sim.seeds`, overridable
per run as training.val_seed / training.test_seed), all users at once since the policy is fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from slatectl.agents.base import Agent
from slatectl.registry import Registry
from slatectl.sim.topicrec import TopicRec
from slatectl.train.episodes import play_episodes


@dataclass(frozen=True)
class Evaluation:
    mean: float
    std: float
    episodes: int


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    checkpoint_id: int
    step: int
    best: bool
    val_return: float
    test_mean: float
    test_std: float
    episodes: int


def evaluate(env: TopicRec, agent: Agent, episodes: int, seed: int, device: torch.device | str) -> Evaluation:
    """Mean and std of the greedy return of users 0 … episodes−1 of `seed` (agent left in train mode)."""
    agent.eval()
    try:
        batch = play_episodes(env, agent, torch.arange(episodes), seed, "greedy", device)
    finally:
        agent.train()
    returns = batch.rewards.sum(dim=1).double()
    return Evaluation(float(returns.mean()), float(returns.std()) if episodes > 1 else 0.0, episodes)


def test_checkpoints(registry: Registry, run_id: int, env: TopicRec, agent: Agent, episodes: int, seed: int,
                     device: torch.device | str, keep_going: Callable[[], bool] = lambda: True) -> list[TestResult]:
    """Test every checkpoint of the run on the fixed test users and record each result; `keep_going` is
    asked before each checkpoint (False stops early: a stop request, the heartbeat's chance to run)."""
    results = []
    for checkpoint in registry.list_checkpoints(run_id=run_id):
        if not keep_going():
            break
        agent.load_state_dict(registry.load_checkpoint_state(checkpoint.id))
        agent.to(device)
        result = evaluate(env, agent, episodes, seed, device)
        registry.record_test_return(checkpoint.id, result.mean, result.std, episodes)
        results.append(TestResult(checkpoint.id, checkpoint.step, bool(checkpoint.is_best),
                                  float(checkpoint.val_return_mean), result.mean, result.std, episodes))
    return results


test_checkpoints.__test__ = False  # not a pytest test function
