"""SAC+TopK (ideal) learns on diffuse_topdown within a CPU budget of a few minutes, whatever the thread count.

Budget: 2,000 steps = 200 random-phase episodes (no update) then 1,800 SAC updates with the agent's default
(reference) hyper-parameters, 10 episodes collected per round (`training.parallel_episodes=10`,
docs/algorithms.md §6), a checkpoint and a 100-user validation every 200 steps.

What is compared, on the same 500 test users (paired):
- *untrained*: the checkpoint at the end of the random phase (step 200, saved before any update);
- *trained*: the checkpoint with the best validation return (chosen on the validation users, which are
  not the test users), i.e. what `ckpt promote --quality expert` would take. Taking the best-validation
  checkpoint rather than the last one makes the test insensitive to where in SAC's noisy curve the budget
  happens to end.
The untrained actor is already far above the random policy (an untrained actor outputs an almost
constant action: one coherent top-10 that a TopDown user clicks often), so beating random does not show
learning; the test requires the trained policy to beat its own untrained start by Z_MIN standard errors
of the paired difference (and random by far).

Why this env: on focused_topdown the untrained policy happened to be strong (215 of ~240 for seed 3) and the
effect was within thread-count noise (2 threads: 215.0 → 217.2, z 1.97). Training is bit-reproducible only
for a fixed machine and thread count (docs/algorithms.md §6.3), so the figures below were measured per
seed and per thread count (`torch.set_num_threads`), one process at a time, on the project's 2-core AMD
EPYC machine (torch 2.13.0 CPU; 2-thread runs with OMP_WAIT_POLICY=PASSIVE, which changes only how idle
threads wait, to keep them from spinning on the shared machine):

Test return on the 500 test users (mean clicks per episode); z = mean paired difference / its standard
error; random policy 34.4 (SEM 0.3) for every row. "last" = the final checkpoint, for comparison.

| seed | threads | untrained (step 200) | best-val step | trained (best val) | z | last (step 2,000) | z last |
|---:|---:|---:|---:|---:|---:|---:|---:|
| 1 | 1 | 187.7 | 1,000 | 259.4 | 29.5 | 249.0 | 19.4 |
| 1 | 2 | 187.7 | 1,000 | 256.9 | 28.2 | 248.5 | 19.4 |
| 2 | 1 | 144.9 | 1,800 | 232.4 | 33.0 | 226.2 | 31.3 |
| 2 | 2 | 144.9 | 1,400 | 264.9 | 51.1 | 232.4 | 33.0 |
| 3 | 1 | 198.9 | 2,000 | 270.5 | 23.4 | 270.5 | 23.4 |
| 3 | 2 | 198.9 | 2,000 | 272.6 | 23.9 | 272.6 | 23.9 |
| 4 | 1 | 194.5 | 2,000 | 275.5 | 24.7 | 275.5 | 24.7 |
| 4 | 2 | 194.5 | 1,800 | 278.7 | 25.8 | 270.1 | 23.0 |
| 5 | 1 | 120.4 | 2,000 | 249.2 | 42.4 | 249.2 | 42.4 |
| 5 | 2 | 120.4 | 1,400 | 249.0 | 43.7 | 249.0 | 43.7 |

The untrained checkpoint is identical across thread counts (no update yet); the trained ones differ (the
curves diverge after a few hundred updates), yet every run gains 69–129 clicks over its start. The seed-3
1-thread run was repeated with identical test returns at every checkpoint (bit-reproducible for a fixed
thread count).

Every run improved by z ≥ 23.4 (z ≥ 19.4 even for the last checkpoint). Z_MIN = 8 is far beyond chance
(one-sided p < 1e-15 if the trained policy were no better) and about a third of the smallest measured z,
so the test fails only
if learning breaks, not because of the seed or the thread count. CI runs seed 3 (the issue's seed; the
smallest measured z).
"""

import math

import pytest
import torch

from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.sim.factory import make_env
from slatectl.sim.policies import RandomSlatePolicy
from slatectl.sim.rollout import run_episodes
from slatectl.sim.seeds import TEST_SEED
from slatectl.train.assembly import load_checkpoint_agent
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer
from stacked_play import play_one, stacked

ENV, SEED = "diffuse_topdown", 3
RANDOM_STEPS, MAX_STEPS, SAVE_EVERY = 200, 2000, 200
TEST_USERS = 500
Z_MIN = 8


def _test_returns(registry, checkpoint_id: int) -> torch.Tensor:
    loaded = load_checkpoint_agent(registry, checkpoint_id)
    agent = stacked(loaded.config.agent_name, loaded.agent)
    batch = play_one(loaded.env, agent, torch.arange(TEST_USERS), TEST_SEED, "greedy")
    return batch.rewards.sum(dim=1).double()


def _sem(x: torch.Tensor) -> float:
    return float(x.std() / math.sqrt(x.numel()))


@pytest.mark.slow
def test_sac_topk_ideal_learns_on_diffuse_topdown(tmp_path):
    overrides = [f"training.random_steps={RANDOM_STEPS}", "training.parallel_episodes=10",
                 "training.val_episodes=100", "training.test_episodes=10", f"training.seed={SEED}"]
    config = resolve_run_config("sac-topk-ideal", ENV, overrides=overrides,
                                cli_training={"max_steps": MAX_STEPS, "save_every": SAVE_EVERY})
    with open_registry(Settings.resolve(home=tmp_path / "home")) as registry:
        run_id = Trainer(registry, config).run(command="test")[0].run_id
        checkpoints = registry.list_checkpoints(run_id=run_id)
        assert [c.step for c in checkpoints] == list(range(SAVE_EVERY, MAX_STEPS + 1, SAVE_EVERY))
        untrained_checkpoint = checkpoints[0]
        assert untrained_checkpoint.step == RANDOM_STEPS  # end of the random phase: no update yet
        best = next(c for c in checkpoints if c.is_best)  # highest validation return (earliest on a tie)
        assert best.step > RANDOM_STEPS, [(c.step, c.val_return_mean) for c in checkpoints]
        untrained = _test_returns(registry, untrained_checkpoint.id)
        trained = _test_returns(registry, best.id)

    # learning: better than its own start on the same users, by Z_MIN standard errors of the difference
    difference = trained - untrained
    z = float(difference.mean()) / _sem(difference)
    assert z > Z_MIN, (float(untrained.mean()), float(trained.mean()), best.step, z)

    # and far above the random policy (~33 on this env): 10 standard errors of the difference
    random_returns = run_episodes(make_env(ENV), RandomSlatePolicy(), torch.arange(TEST_USERS), TEST_SEED)
    margin = 10 * math.sqrt(_sem(trained) ** 2 + _sem(random_returns) ** 2)
    assert trained.mean() > random_returns.mean() + margin, (float(trained.mean()), float(random_returns.mean()))
