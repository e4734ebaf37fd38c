"""The golden figures (tests/golden_training.py) still come out: the training engine's rewrite (issue 21)
keeps every agent's semantics.

Tolerances, and why:
- validation and test returns exactly: each is a mean of integer click counts over 8 users, and the
  greedy slates only change where float rounding flips a near-tie between two items' scores;
- checkpoint tensors: the sum and the sum of |x| within 1e-4 of the tensor's L1 norm. Batched and
  unbatched kernels round differently in the last bit (float32: ~1e-7 relative per operation) and
  sixteen Adam steps carry that forward, which stays orders below 1e-4; a changed update does not
  (one Adam step of lr 1e-3 moves every weight by ~1e-3, on weights of ~1e-2: a few percent of the norm);
- the dataset: integer and boolean arrays exactly; float arrays as the checkpoint tensors; the file's
  SHA-256 exactly while every array matches exactly.
"""

import json

import pytest

from golden_training import GOLDEN, figures


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return figures(tmp_path_factory.mktemp("golden") / "home")


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


def _assert_fingerprints(actual: dict, expected: dict, where: str) -> bool:
    """Asserts the tolerance above; returns whether every fingerprint matched exactly."""
    assert sorted(actual) == sorted(expected), where
    exact = True
    for name, (total, norm) in expected.items():
        got_total, got_norm = actual[name]
        bound = 1e-4 * max(norm, 1e-12)
        assert abs(got_total - total) <= bound and abs(got_norm - norm) <= bound, f"{where}: {name}"
        exact = exact and (got_total, got_norm) == (total, norm)
    return exact


def _assert_run(actual: dict, expected: dict, where: str) -> None:
    assert actual["validations"] == expected["validations"], where
    assert sorted(actual["checkpoints"]) == sorted(expected["checkpoints"]), where
    for step, checkpoint in expected["checkpoints"].items():
        got = actual["checkpoints"][step]
        assert (got["val_return"], got["test_return"]) == (checkpoint["val_return"], checkpoint["test_return"]), \
            f"{where} step {step}"
        _assert_fingerprints(got["weights"], checkpoint["weights"], f"{where} step {step}")


def test_every_agents_solo_run_keeps_its_golden_figures(fresh, golden):
    assert sorted(fresh["solo"]) == sorted(golden["solo"])
    for agent, expected in golden["solo"].items():
        _assert_run(fresh["solo"][agent], expected, agent)


def test_the_sac_gems_population_keeps_its_golden_figures(fresh, golden):
    assert [(m["env"], m["seed"]) for m in fresh["population"]] == [(m["env"], m["seed"]) for m in golden["population"]]
    for got, expected in zip(fresh["population"], golden["population"]):
        _assert_run(got, expected, f"member {expected['env']} seed {expected['seed']}")


def test_the_collected_dataset_keeps_its_golden_arrays(fresh, golden):
    assert fresh["dataset"]["exact_arrays"] == golden["dataset"]["exact_arrays"]
    if _assert_fingerprints(fresh["dataset"]["float_arrays"], golden["dataset"]["float_arrays"], "dataset"):
        assert fresh["dataset"]["sha256"] == golden["dataset"]["sha256"]


def test_the_golden_population_member_is_the_golden_solo_run():
    """The figures themselves say member = solo: member 0 has the solo SAC+GeMS run's env and seed."""
    golden = json.loads(GOLDEN.read_text())
    member, solo = golden["population"][0], golden["solo"]["sac-gems"]
    assert member["validations"] == solo["validations"]
