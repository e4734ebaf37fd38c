"""GeMS pretraining on the Lightning Trainer (`slatectl/pretrain/lightning_engine.py`) against the plain loop
it replaced as the default (`engine="loop"`, kept callable for exactly this comparison): both drive the
same `GeMSFit`, so the same seed gives the same weights, history and best epoch, alone or in a stack."""

from __future__ import annotations

import math

import pytest
import torch

from gems_oracle import reference_terms
from slatectl.pretrain.gems_stack import GeMSStack
from slatectl.pretrain.engines import EpochChunks
from slatectl.pretrain.gems_train import (DEFAULT_ENGINE, GeMSConfig, GeMSFit, GeMSMember, build_gems, split_logged,
                                          train_gems, train_gems_population)


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


def test_a_stack_of_two_gets_the_same_weights_and_histories_on_both_engines():
    members = [GeMSMember(*logged(seed=seed), GeMSConfig(max_epochs=3, batch_size=64, latent_dim=8), seed)
               for seed in (1, 2)]
    loop = train_gems_population(members, engine="loop")
    trainer = train_gems_population(members, engine="lightning")
    for (loop_model, loop_metrics), (trainer_model, trainer_metrics) in zip(loop, trainer):
        assert_same_state(loop_model.state_dict(), trainer_model.state_dict())
        assert trainer_metrics["history"] == loop_metrics["history"]
    assert loop[0][1]["history"] != loop[1][1]["history"]  # two different members


def test_the_kept_weights_are_those_of_the_best_validation_epoch(one_torch_thread):
    # one thread: at this large step on little data the validation curve's shape depends on the kernels'
    # rounding, and this seed's curve has its minimum before the last epoch at one thread
    slates, clicks = logged(episodes=10, seed=2)
    config = GeMSConfig(max_epochs=4, batch_size=16, latent_dim=8, lr=3e-2)  # a large step on little data
    model, metrics = train_gems(slates, clicks, config, seed=1)
    losses = [row["val_loss"] for row in metrics["history"]]
    assert metrics["best_epoch"] == losses.index(min(losses)) < len(losses) - 1  # not simply the last epoch
    _, (val_slates, val_clicks) = split_logged(slates, clicks, config)
    # The returned model, evaluated here by the independent objective, has the best epoch's validation loss
    # (not the last epoch's); one mean over all rows against batch means: float rounding apart.
    with torch.no_grad():
        evaluated = reference_terms(model, val_slates, val_clicks, config.lambda_click, config.lambda_KL)["total"]
    assert evaluated.item() == pytest.approx(min(losses), rel=1e-5)


def test_chunking_batches_per_training_step_changes_nothing(monkeypatch):
    slates, clicks = logged(episodes=12)
    config = GeMSConfig(max_epochs=2, batch_size=16, latent_dim=8)
    states, batches = [], []
    for chunk in (1, 5, 1000):
        monkeypatch.setattr(GeMSFit, "chunk_batches", chunk)
        seen: list[tuple[int, int, int]] = []
        model, metrics = train_gems(slates, clicks, config, 3, batch_callback=lambda *args: seen.append(args))
        states.append(model.state_dict())
        batches.append(seen)
        assert metrics["epochs_run"] == 2
    per_epoch = math.ceil(metrics["n_train_slates"] / 16)
    assert batches[0] == batches[1] == batches[2] == [(e, d, per_epoch) for e in range(2) for d in range(1, per_epoch + 1)]
    assert_same_state(states[0], states[1])
    assert_same_state(states[0], states[2])


def _fit(rows: int, batch_size: int, seeds: tuple[int, ...]) -> GeMSFit:
    """A fit of len(seeds) members over `rows` training slates each (contents irrelevant here)."""
    config = GeMSConfig(batch_size=batch_size, latent_dim=4)
    members = len(seeds)
    stack = GeMSStack([build_gems(config) for _ in seeds], torch.device("cpu"))
    train = (torch.zeros(members, rows, 10, dtype=torch.int16), torch.zeros(members, rows, 10, dtype=torch.uint8))
    val = (train[0][:, :0], train[1][:, :0])
    return GeMSFit(stack, train, val, config, [torch.Generator() for _ in seeds],
                   [torch.Generator().manual_seed(seed) for seed in seeds])


def test_epoch_chunks_cover_every_row_once_per_epoch_in_the_generators_order():
    fit = _fit(rows=103, batch_size=10, seeds=(9, 4))
    fit.chunk_batches = 4
    chunks = EpochChunks(fit)
    assert len(chunks) == 3
    expected = [torch.Generator().manual_seed(9), torch.Generator().manual_seed(4)]
    for _ in range(2):  # each iteration is an epoch with fresh permutations, drawn as the plain loop draws them
        epoch = list(chunks)
        assert [chunk.shape for chunk in epoch] == [(2, 40), (2, 40), (2, 23)]
        assert [index.shape[1] for chunk in epoch for index in chunk.split(10, dim=1)] == [10] * 10 + [3]
        rows = torch.cat(epoch, dim=1)
        for k, generator in enumerate(expected):  # each member's own order
            torch.testing.assert_close(rows[k], torch.randperm(103, generator=generator))


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
