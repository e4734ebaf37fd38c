"""The suggestion rule (pure) and where the random-policy return comes from."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slatectl.registry import Checkpoint, resolve_random_return, suggest_from
from slatectl.errors import BadInput


def checkpoints(returns: list[float], env: str = "focused_topdown") -> list[Checkpoint]:
    return [Checkpoint(id=i + 1, run_id=1, env=env, agent="sac-gems", step=(i + 1) * 10_000, val_return_mean=r,
                       val_return_std=0.0, val_episodes=10, storage_key=f"checkpoint/{i}.pt", size=1, sha256="0")
            for i, r in enumerate(returns)]


def test_expert_is_the_best_and_ties_go_to_the_earliest_step():
    suggestion = suggest_from(checkpoints([3.0, 9.0, 4.0, 9.0]), "expert")
    assert suggestion.suggested.step == 20_000 and suggestion.best_return == 9.0
    assert "highest validation return among trained checkpoints" in suggestion.rule


def test_medium_is_closest_to_the_midpoint_between_random_and_best():
    # random 2, best 30 -> target 16: 15 (|1|) beats 18 (|2|) and 10.
    suggestion = suggest_from(checkpoints([10.0, 15.0, 18.0, 30.0]), "medium", random_return=2.0)
    assert suggestion.target_return == 16.0 and suggestion.suggested.val_return_mean == 15.0
    assert "closest to random + 0.5 × (best − random), best among trained checkpoints" in suggestion.rule
    assert "16.000" in suggestion.rule
    # A different fraction moves the target: 2 + 0.9 × 28 = 27.2 -> 30.
    assert suggest_from(checkpoints([10.0, 15.0, 18.0, 30.0]), "medium", 2.0, 0.9).suggested.val_return_mean == 30.0


def test_share_of_best_is_reported_for_every_candidate():
    suggestion = suggest_from(checkpoints([5.0, 20.0, 10.0]), "expert")
    assert [round(c.share_of_best, 2) for c in suggestion.candidates] == [0.25, 1.0, 0.5]


@pytest.mark.parametrize("quality, kwargs, message", [
    ("random", {}, "needs no checkpoint"),
    ("medium", {}, "needs the random policy"),
    ("medium", {"random_return": 0.0, "target_fraction": 1.5}, "target-fraction"),
])
def test_bad_suggestion_requests(quality, kwargs, message):
    with pytest.raises(BadInput, match=message):
        suggest_from(checkpoints([1.0, 2.0]), quality, **kwargs)


def test_candidates_must_be_one_env_and_not_empty():
    with pytest.raises(BadInput, match="one env"):
        suggest_from(checkpoints([1.0]) + checkpoints([2.0], env="diffuse_mix"), "expert")
    with pytest.raises(BadInput, match="no checkpoints"):
        suggest_from([], "expert")


@settings(max_examples=200, deadline=None)
@given(returns=st.lists(st.floats(-50, 200, allow_nan=False), min_size=1, max_size=30),
       random_return=st.floats(-50, 200, allow_nan=False),
       fraction=st.floats(0, 1, exclude_min=True, exclude_max=True))
def test_medium_suggestion_minimises_the_distance_to_the_target(returns, random_return, fraction):
    candidates = checkpoints(returns)
    suggestion = suggest_from(candidates, "medium", random_return, fraction)
    target = random_return + fraction * (max(returns) - random_return)
    distances = [abs(r - target) for r in returns]
    assert suggestion.target_return == pytest.approx(target)
    assert abs(suggestion.suggested.val_return_mean - target) == min(distances)
    assert suggestion.suggested.step == candidates[distances.index(min(distances))].step  # earliest of equals


# -- with a registry ---------------------------------------------------------------------------------------

def test_registry_suggestion_uses_registered_random_return(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    for step, value in {10: 6.0, 20: 12.0, 30: 20.0}.items():
        reg.register_checkpoint(run.id, step, {"w": torch.zeros(1)}, val_return_mean=value, val_return_std=0.0,
                                val_episodes=5)
    reg.record_policy_return("focused_topdown", "random", 4.0)
    never = lambda env: pytest.fail("must not simulate when a return is registered")  # noqa: E731
    suggestion = reg.suggest_checkpoint("focused_topdown", "medium", compute_random=never)
    assert suggestion.random_return == 4.0 and "registered" in suggestion.random_source
    assert suggestion.suggested.step == 20  # target 12
    assert reg.suggest_checkpoint("focused_topdown", "expert").suggested.step == 30
    assert reg.suggest_checkpoint("focused_topdown", "medium", random_return=20.0).suggested.step == 30
    with pytest.raises(BadInput, match="no checkpoints for env diffuse_mix"):
        reg.suggest_checkpoint("diffuse_mix", "expert")


def test_random_return_is_computed_once_then_registered(reg):
    calls = []

    def compute(env):
        calls.append(env)
        return 7.5

    first = resolve_random_return(reg, "diffuse_mix", compute)
    second = resolve_random_return(reg, "diffuse_mix", compute)
    assert (first.value, second.value, calls) == (7.5, 7.5, ["diffuse_mix"])
    assert "computed" in first.source and "registered" in second.source


def test_random_return_falls_back_to_zero_with_a_note(reg):
    def missing_simulator(env):
        raise ImportError("cannot import name 'random_return'")

    resolved = resolve_random_return(reg, "diffuse_mix", missing_simulator)
    assert resolved.value == 0.0 and "assumed 0" in resolved.source and "random_return" in resolved.source
    assert reg.policy_return("diffuse_mix", "random") is None  # an assumption is never recorded as a measurement
