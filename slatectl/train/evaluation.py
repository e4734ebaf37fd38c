"""Validation and test: the greedy policy of every member on fixed users (seeds in `slatectl.sim.seeds`,
overridable per run as training.val_seed / training.test_seed), all users at once since the policy is fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from slatectl.agents.stacked import StackedAgent
from slatectl.registry import Registry
from slatectl.sim.member_envs import MemberEnvs
from slatectl.train.episodes import play_member_episodes


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


def evaluate_members(envs: MemberEnvs, agent: StackedAgent, episodes: int, seed: int) -> list[Evaluation]:
    """Each member's greedy return on users 0 … episodes−1 of `seed` (the same users for every member);
    the agent is left in train mode."""
    agent.eval()
    try:
        batch = play_member_episodes(envs, agent, torch.arange(episodes), [seed] * envs.members, "greedy", [])
    finally:
        agent.train()
    returns = batch.rewards.sum(dim=2).double().cpu()  # (K, episodes), read once
    return [Evaluation(float(r.mean()), float(r.std()) if episodes > 1 else 0.0, episodes) for r in returns]


def record_checkpoint_tests(registry: Registry, run_ids: list[int], envs: MemberEnvs, agent: StackedAgent,
                            episodes: int, seed: int, keep_going: Callable[[], bool]) -> list[list[TestResult]]:
    """Test and record every checkpoint of every member run, all members at once per step: member k's slot
    holds its checkpoint of that step (a member without one keeps other weights, whose return is not
    recorded). `keep_going()` False before a step stops early. Overwrites the stacked weights: call it when
    training is over."""
    checkpoints = [{c.step: c for c in registry.list_checkpoints(run_id=run_id)} for run_id in run_ids]
    results: list[list[TestResult]] = [[] for _ in run_ids]
    for step in sorted(set().union(*checkpoints)):
        if not keep_going():
            break
        present = [(k, by_step[step]) for k, by_step in enumerate(checkpoints) if step in by_step]
        for k, checkpoint in present:
            agent.load_member_state_dict(k, registry.load_checkpoint_state(checkpoint.id))
        evaluations = evaluate_members(envs, agent, episodes, seed)
        for k, checkpoint in present:
            result = evaluations[k]
            registry.record_test_return(checkpoint.id, result.mean, result.std, episodes)
            results[k].append(TestResult(checkpoint.id, checkpoint.step, bool(checkpoint.is_best),
                                         float(checkpoint.val_return_mean), result.mean, result.std, episodes))
    return results
