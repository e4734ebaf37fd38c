"""GeMS pretraining on the Lightning Trainer (`slatectl/pretrain/gems_lightning.py`) against the plain loop
it replaced as the default (`engine="loop"`, kept callable for exactly this comparison): same seed, same
weights, same history, same best epoch."""

from __future__ import annotations

import math

import pytest
import torch

from slatectl.pretrain.gems_lightning import EpochChunks, fit_with_trainer
from slatectl.pretrain.gems_train import DEFAULT_ENGINE, GeMSConfig, _validation_loss, build_gems, split_logged, train_gems


def logged(episodes: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Structured logged episodes (items drawn from a few popular ones, clicks on low ids) so that the
    validation loss moves and the epochs differ."""
    generator = torch.Generator().manual_seed(seed)
    slates = torch.randint(40, (episodes, 20, 10), generator=generator) * 7 % 1000
    clicks = ((slates < 140) & (torch.rand(slates.shape, generator=generator) < 0.7)).float()
    return slates, clicks


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:  # on the CPU the two engines run the same kernels in the same order: bitwise equal
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("shuffle, batch_size", [(True, 64), (False, 100)])
def test_the_trainer_gives_the_plain_loops_weights_history_and_best_epoch(shuffle, batch_size):
    slates, clicks = logged()
    config = GeMSConfig(max_epochs=4, batch_size=batch_size, shuffle=shuffle, latent_dim=8)
    loop_model, loop_metrics = train_gems(slates, clicks, config, seed=5, engine="loop")
    trainer_model, trainer_metrics = train_gems(slates, clicks, config, seed=5, engine="lightning")
    assert_same_state(loop_model.state_dict(), trainer_model.state_dict())
    assert trainer_metrics["history"] == loop_metrics["history"]
    assert trainer_metrics["best_epoch"] == loop_metrics["best_epoch"]
    assert DEFAULT_ENGINE == "lightning"


def test_the_kept_weights_are_those_of_the_best_validation_epoch():
    slates, clicks = logged(episodes=10, seed=2)
    config = GeMSConfig(max_epochs=4, batch_size=16, latent_dim=8, lr=3e-2)  # a large step on little data
    model, metrics = train_gems(slates, clicks, config, seed=1)
    losses = [row["val_loss"] for row in metrics["history"]]
    assert metrics["best_epoch"] == losses.index(min(losses)) < len(losses) - 1  # not simply the last epoch
    _, (val_slates, val_clicks) = split_logged(slates, clicks, config)
    # The returned model, evaluated here, has the best epoch's validation loss (not the last epoch's).
    assert _validation_loss(model, val_slates, val_clicks, config) == pytest.approx(min(losses), rel=1e-6)


def test_chunking_batches_per_training_step_changes_nothing():
    slates, clicks = logged(episodes=12)
    config = GeMSConfig(max_epochs=2, batch_size=16, latent_dim=8)
    (train_s, train_c), val = split_logged(slates.long(), clicks.float(), config)
    states, batches = [], []
    for chunk in (1, 5, 1000):
        torch.manual_seed(3)
        model = build_gems(config, slates.shape[-1])
        seen: list[tuple[int, int, int]] = []
        outcome = fit_with_trainer(model, (train_s, train_c), val, config, 3, None,
                                   lambda *args: seen.append(args), cuda_graph=False, chunk_batches=chunk)
        states.append(model.state_dict())
        batches.append(seen)
        assert len(outcome.history) == 2
    per_epoch = math.ceil(train_s.shape[0] / 16)
    assert batches[0] == batches[1] == batches[2] == [(e, d, per_epoch) for e in range(2) for d in range(1, per_epoch + 1)]
    assert_same_state(states[0], states[1])
    assert_same_state(states[0], states[2])


def test_epoch_chunks_cover_every_row_once_per_epoch_in_the_generators_order():
    chunks = EpochChunks(rows=103, batch_size=10, chunk_batches=4, generator=torch.Generator().manual_seed(9),
                         device=torch.device("cpu"))
    assert (chunks.batches_per_epoch, len(chunks)) == (11, 3)
    expected = torch.Generator().manual_seed(9)
    for _ in range(2):  # each iteration is an epoch with a fresh permutation, drawn as the plain loop draws it
        epoch = list(chunks)
        assert [len(chunk) for chunk in epoch] == [40, 40, 23]
        assert [len(index) for chunk in epoch for index in chunk.split(10)] == [10] * 10 + [3]
        rows = torch.cat(epoch)
        torch.testing.assert_close(rows, torch.randperm(103, generator=expected))


def test_the_callers_rng_is_untouched_and_a_bad_engine_is_refused():
    slates, clicks = logged(episodes=8)
    config = GeMSConfig(max_epochs=1, batch_size=64, latent_dim=4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_gems(slates, clicks, config, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(ValueError, match="engine must be one of lightning, loop"):
        train_gems(slates, clicks, config, seed=0, engine="fabric")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs it there)")
def test_on_cuda_the_trainer_replays_the_captured_step_and_matches_the_loop():
    slates, clicks = logged(episodes=40)
    config = GeMSConfig(max_epochs=2, batch_size=64, latent_dim=8, accelerator="cuda")
    loop_model, loop_metrics = train_gems(slates, clicks, config, seed=4, engine="loop")
    trainer_model, trainer_metrics = train_gems(slates, clicks, config, seed=4, engine="lightning")
    assert loop_metrics["cuda_graph"] is True and trainer_metrics["cuda_graph"] is True
    for key, value in loop_model.state_dict().items():  # GPU reductions may reorder: float rounding only
        torch.testing.assert_close(trainer_model.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)
