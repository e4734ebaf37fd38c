"""BPR matrix factorisation: loss, data extraction, fold-in validation, learning, early stopping."""

from __future__ import annotations

import math

import pytest
import torch

from slatectl.errors import BadInput
from slatectl.pretrain.mf import (
    BPRMatrixFactorization,
    MFConfig,
    bpr_loss,
    click_positives,
    fold_in_evaluate,
    fold_in_pairs,
    ranking_auc,
    train_mf,
)
from synthetic_logged import topic_user_clicks


def test_config_defaults_are_the_reference() -> None:
    cfg = MFConfig()
    assert (cfg.embedding_dim, cfg.batch_size, cfg.lr, cfg.num_neg_samples) == (20, 256, 1e-4, 1)
    assert (cfg.weight_decay, cfg.patience, cfg.eval_every_batches, cfg.val_fraction) == (0.0, 3, 1000, 0.1)
    with pytest.raises(BadInput, match="mf.val_fraction"):
        MFConfig(val_fraction=1.0).validate()


def test_bpr_loss_and_auc_values() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[0.0], [0.0]])
    expected = (-math.log(1 / (1 + math.exp(-2.0))) + math.log(2.0)) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    assert ranking_auc(pos, neg) == pytest.approx(0.75)  # one win, one tie
    # Stable where log(sigmoid) would underflow.
    assert math.isfinite(bpr_loss(torch.tensor([-200.0]), torch.tensor([[0.0]])).item())


def test_model_init_and_scores() -> None:
    torch.manual_seed(0)
    model = BPRMatrixFactorization(num_users=50, num_items=1000, embedding_dim=20)
    bound = math.sqrt(6 / (1000 + 20))  # Xavier-uniform bound of a 1000x20 table
    assert float(model.item_embeddings.weight.detach().abs().max()) <= bound
    users, items = torch.tensor([0, 3]), torch.tensor([[1, 2, 3], [4, 5, 6]])
    scores = model.score(users, items)
    assert scores.shape == (2, 3)
    torch.testing.assert_close(scores[1, 2], model.user_embeddings.weight[3] @ model.item_embeddings.weight[6])
    torch.testing.assert_close(model.score(users, items[:, 0]), scores[:, 0])


def test_click_positives_lists_every_click_with_its_episode() -> None:
    slates = torch.tensor([[[5, 6], [7, 8]], [[9, 10], [11, 12]]])  # (E=2, H=2, K=2)
    clicks = torch.tensor([[[1, 0], [1, 1]], [[0, 0], [0, 1]]])
    episode, item = click_positives(slates, clicks)
    assert episode.tolist() == [0, 0, 0, 1] and item.tolist() == [5, 7, 8, 12]


def test_fold_in_uses_first_half_as_history_and_second_half_as_targets() -> None:
    slates = torch.arange(40).view(1, 4, 10)  # one user, 4 steps
    clicks = torch.zeros(1, 4, 10, dtype=torch.long)
    clicks[0, 0, 1] = clicks[0, 3, 2] = 1  # history item 1, target item 32
    pairs = fold_in_pairs(slates, clicks, num_items=1000, num_neg=2, generator=torch.Generator().manual_seed(0))
    assert pairs.history_item.tolist() == [1] and pairs.target_item.tolist() == [32]
    assert pairs.negative_item.shape == (1, 2)
    table = torch.zeros(1000, 2)
    table[1] = table[32] = torch.tensor([1.0, 0.0])  # target aligned with history, negatives at 0
    assert fold_in_evaluate(table, pairs)["auc"] == 1.0
    # A user without history clicks gets no validation pairs.
    clicks[0, 0, 1] = 0
    assert len(fold_in_pairs(slates, clicks, 1000, 1, torch.Generator().manual_seed(0))) == 0


def test_brief_training_ranks_held_out_clicks_above_random_items() -> None:
    # 500 users, each liking one of 10 topics (100 items each). Held-out clicks of unseen validation
    # users are scored against uniform items. A random table gives AUC ~0.5; ranking by the true topic
    # gives `best_auc` (~0.82: 26 % of clicks are off-topic noise). 6,000 BPR steps at the reference
    # lr reach ~0.8 on this data; 0.7 leaves margin and is still far above chance.
    slates, clicks, best_auc = topic_user_clicks(episodes=500, seed=0)
    assert 0.8 < best_auc < 0.85
    table, metrics = train_mf(slates, clicks, MFConfig(max_batches=6_000, eval_every_batches=1_000), seed=3)
    assert table.shape == (1000, 20) and table.dtype == torch.float32
    assert metrics["n_val_users"] == 50 and metrics["n_train_users"] == 450
    assert metrics["batches"] == 6_000 and len(metrics["history"]) == 6
    assert 0.7 < metrics["val_auc"] <= best_auc + 0.02
    assert metrics["history"][0]["val_auc"] < metrics["val_auc"]
    # Items of one topic must end up pointing the same way: cosine within topic > across topics.
    unit = torch.nn.functional.normalize(table, dim=1)
    cos = unit @ unit.T
    same = (torch.arange(1000)[:, None] // 100) == (torch.arange(1000)[None, :] // 100)
    assert cos[same].mean() > cos[~same].mean() + 0.2


def test_early_stopping_keeps_the_best_table_and_stops_after_patience() -> None:
    # A large lr makes training users overfit fast, so the validation loss turns up and stops the run.
    slates, clicks, _ = topic_user_clicks(episodes=100, seed=1)
    table, metrics = train_mf(slates, clicks, MFConfig(lr=0.05, eval_every_batches=20, patience=2), seed=0)
    history = metrics["history"]
    assert metrics["stopped_early"]
    losses = [h["val_loss"] for h in history]
    assert metrics["val_loss"] == min(losses)
    best_index = losses.index(min(losses))
    assert metrics["best_batch"] == history[best_index]["batch"]
    assert len(history) - 1 - best_index == 2  # exactly `patience` evaluations after the best
    pairs = fold_in_pairs(slates[:10], clicks[:10], 1000, 1, torch.Generator().manual_seed(0))
    assert math.isfinite(fold_in_evaluate(table, pairs)["loss"])


def test_training_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    slates, clicks, _ = topic_user_clicks(episodes=60, seed=2)
    cfg = MFConfig(max_batches=150, eval_every_batches=50)
    a, ma = train_mf(slates, clicks, cfg, seed=5)
    b, mb = train_mf(slates, clicks, cfg, seed=5)
    c, _ = train_mf(slates, clicks, cfg, seed=6)
    assert torch.equal(a, b) and ma["history"] == mb["history"]
    assert not torch.equal(a, c)
    # Compact storage dtypes (int16 ids, uint8 clicks) give the same result.
    d, _ = train_mf(slates.to(torch.int16), clicks.to(torch.uint8), cfg, seed=5)
    assert torch.equal(a, d)


def test_bad_inputs_are_refused() -> None:
    slates, clicks, _ = topic_user_clicks(episodes=10, steps=4, seed=0)
    with pytest.raises(ValueError, match="shape"):
        train_mf(slates, clicks[:5], MFConfig(), seed=0)
    with pytest.raises(ValueError, match="3-D"):
        train_mf(slates[0], clicks[0], MFConfig(), seed=0)
    with pytest.raises(ValueError, match="no clicks"):
        train_mf(slates, torch.zeros_like(clicks), MFConfig(), seed=0)
