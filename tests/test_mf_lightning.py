"""BPR-MF pretraining on the Lightning Trainer (`slatectl/pretrain/lightning_engine.py`) against the plain loop
(`engine="loop"`, kept callable for this comparison): same seed, same item table and metrics, including
early stopping in the middle of an epoch, a batch cap and the chunking of batches per training_step."""

from __future__ import annotations

import math

import pytest
import torch

from slatectl.pretrain.mf import MFConfig, MFFit, train_mf

from synthetic_logged import topic_user_clicks


def same_result(a: tuple[torch.Tensor, dict], b: tuple[torch.Tensor, dict]) -> None:
    (table_a, metrics_a), (table_b, metrics_b) = a, b
    torch.testing.assert_close(table_a, table_b, rtol=0, atol=0)  # the same kernels in the same order
    assert metrics_a.keys() == metrics_b.keys()
    for key in metrics_a:
        same_nan = isinstance(metrics_a[key], float) and math.isnan(metrics_a[key]) and math.isnan(metrics_b[key])
        assert same_nan or metrics_a[key] == metrics_b[key], key


@pytest.mark.parametrize("config, stops_early", [
    # patience 2 with a large step: stops by patience in the middle of an epoch
    (MFConfig(lr=0.05, eval_every_batches=7, patience=2, batch_size=64), True),
    # a batch cap that is not a multiple of the evaluation period (last evaluation at the cap)
    (MFConfig(eval_every_batches=10, max_batches=45, batch_size=64, patience=100), False),
    # several epochs, no validation users: the final table
    (MFConfig(val_fraction=0.0, max_epochs=3, batch_size=128), False),
])
def test_the_trainer_gives_the_plain_loops_table_and_metrics(config, stops_early):
    slates, clicks, _ = topic_user_clicks(episodes=60, steps=20, seed=4)
    loop = train_mf(slates, clicks, config, seed=8, engine="loop")
    trainer = train_mf(slates, clicks, config, seed=8, engine="lightning")
    same_result(loop, trainer)
    assert loop[1]["stopped_early"] is stops_early
    if stops_early:
        per_epoch = math.ceil(loop[1]["n_train_positives"] / config.batch_size)
        assert loop[1]["batches"] % per_epoch != 0  # the stop fell inside an epoch
    if config.max_batches is not None:
        assert loop[1]["batches"] == config.max_batches and loop[1]["history"][-1]["batch"] == config.max_batches


def test_chunking_batches_per_training_step_changes_nothing(monkeypatch):
    slates, clicks, _ = topic_user_clicks(episodes=40, steps=20, seed=1)
    config = MFConfig(eval_every_batches=5, patience=3, max_epochs=2, batch_size=64, lr=0.01)
    results = []
    for chunk in (1, 3, 10_000):
        monkeypatch.setattr(MFFit, "chunk_batches", chunk)
        results.append(train_mf(slates, clicks, config, seed=2))
    same_result(results[0], results[1])
    same_result(results[0], results[2])


def test_a_bad_engine_is_refused():
    slates, clicks, _ = topic_user_clicks(episodes=10, steps=10, seed=0)
    with pytest.raises(ValueError, match="engine must be one of lightning, loop"):
        train_mf(slates, clicks, MFConfig(), seed=0, engine="fabric")
