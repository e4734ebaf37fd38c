"""Reference semantics of the pretraining fits, pinned before they were rewritten: fixed-seed short GeMS
(solo on both engines, a stacked population of two) and MF runs against tests/data/pretrain_golden.json
(how it was produced: tests/pretrain_golden.py).

Tolerances. MF: its code is the same kernels in the same order as when pinned, so it must agree to
float32 resolution (relative 1e-6 on every loss, 1e-6 of the table's norm on the probes); here it is
bit for bit (`python tests/pretrain_golden.py --compare`). GeMS populations: the stacked kernels are
unchanged (weights and histories bit for bit here too; the final validation metrics, now computed by
the stack rather than the solo module, within 1.6e-7). GeMS solo runs now run the stacked kernels with K = 1 (batched matmuls
and a hand-written cross-entropy instead of nn.Linear and F.cross_entropy), which round differently:
measured here, |Δ probe| ≤ 7.5e-6 of the norm and losses within 2.1e-7 relative after the 10–21 Adam
steps of these runs. Allowed: 1e-4 of the norm (|Δ probe| is about ‖Δw‖) and 1e-5 relative on losses,
the member-vs-solo criterion of tests/test_gems_population.py; another seed or a wrong batch order,
noise draw or optimizer moves the weights by their own size and the losses by > 1e-3."""

from __future__ import annotations

import json
import math

import pytest

from pretrain_golden import GOLDEN, all_runs

PINNED = json.loads(GOLDEN.read_text())["runs"]
GEMS_WEIGHTS, GEMS_LOSSES = 1e-4, 1e-5
MF_WEIGHTS, MF_LOSSES = 1e-6, 1e-6


@pytest.fixture(scope="module")
def runs():
    return all_runs()


def _close(ours: float, pinned: float, rel: float) -> bool:
    return (math.isnan(ours) and math.isnan(pinned)) or ours == pytest.approx(pinned, rel=rel, abs=rel)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_run_reproduces_its_pinned_weights_and_losses(runs, name):
    ours, pinned = runs[name], PINNED[name]
    weights_tol, losses_tol = (MF_WEIGHTS, MF_LOSSES) if name.startswith("mf") else (GEMS_WEIGHTS, GEMS_LOSSES)
    assert ours["weights"].keys() == pinned["weights"].keys()
    for tensor, pin in pinned["weights"].items():
        now = ours["weights"][tensor]
        assert now["norm"] == pytest.approx(pin["norm"], rel=weights_tol), tensor
        for probe, pinned_probe in zip(now["probes"], pin["probes"]):
            assert abs(probe - pinned_probe) <= weights_tol * pin["norm"] + 1e-9, tensor
    for key in ("best_epoch", "best_batch", "batches"):
        assert ours.get(key) == pinned.get(key), key
    assert _close(ours["val_loss"], pinned["val_loss"], losses_tol)
    assert len(ours["history"]) == len(pinned["history"])
    for row, pinned_row in zip(ours["history"], pinned["history"]):
        assert row.keys() == pinned_row.keys()
        for key in row:
            assert _close(row[key], pinned_row[key], losses_tol), (key, row, pinned_row)
    for key, value in pinned.get("val_terms", {}).items():
        assert _close(ours["val_terms"][key], value, losses_tol), key


def test_the_pins_tell_runs_apart():
    """The fingerprints are sensitive: the two population members (other data and seed) differ well beyond
    the GeMS tolerance, and so do the two MF runs."""
    for a, b in (("population_member0", "population_member1"), ("mf_patience_loop", "mf_batch_cap_loop")):
        first, second = PINNED[a]["weights"], PINNED[b]["weights"]
        tensor = next(iter(first))
        assert abs(first[tensor]["probes"][0] - second[tensor]["probes"][0]) > 10 * GEMS_WEIGHTS * first[tensor]["norm"]
