"""GeMS slate VAE: shapes, loss terms, action bounds, and that brief training learns real structure."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gems_oracle import reference_terms
from slatectl.errors import BadInput
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.gems_stack import GeMSStack, gaussian_kl_to_standard_normal, reparameterise
from slatectl.pretrain.gems_train import GeMSConfig, train_gems
from synthetic_logged import prototype_slates

B, K, N, D = 8, 10, 1000, 32


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, N, (B, K), generator=g), (torch.rand(B, K, generator=g) < 0.3).float()


def test_parameter_count_matches_reference_architecture() -> None:
    # 210->512->256->64 encoder, 32->256->512 trunk + 512->200 and 512->10 heads, 1000x20 table.
    model = GeMS()
    assert sum(p.numel() for p in model.encoder.parameters()) == 255_808
    assert sum(p.numel() for p in model.parameters()) == 523_570


def test_shapes_and_rank_is_deterministic_argmax() -> None:
    torch.manual_seed(0)
    model = GeMS()
    slates, clicks = _batch()
    mu, logvar = model.encode(slates, clicks)
    assert mu.shape == logvar.shape == (B, D)
    item_logits, click_logits = model.decode(mu)
    assert item_logits.shape == (B, K, N) and click_logits.shape == (B, K)
    ranked = model.rank(mu)
    assert ranked.shape == (B, K) and ranked.dtype == torch.long
    assert torch.equal(ranked, item_logits.argmax(-1))
    assert torch.equal(ranked, model.rank(mu))


@pytest.mark.parametrize("chunk_rows", [1, 7, 80, 4096])
def test_chunked_rank_equals_full_argmax_including_ties(chunk_rows: int) -> None:
    torch.manual_seed(1)
    model = GeMS()
    with torch.no_grad():
        model.item_embeddings.weight[3] = model.item_embeddings.weight[900]  # exact ties: lowest id wins
    z = torch.randn(64, D) * 3
    expected = model.decode(z)[0].argmax(-1)
    assert torch.equal(model.rank(z, chunk_rows=chunk_rows), expected)
    assert not (expected == 900).any()


def _terms(model: GeMS, slates: torch.Tensor, clicks: torch.Tensor, lambda_click: float = 0.5,
           lambda_KL: float = 1.0) -> dict[str, torch.Tensor]:
    """The library's objective for one member (K = 1), decoded from z = mu, as scalars."""
    stack = GeMSStack([model], torch.device("cpu"))
    terms = stack.terms(slates.long()[None], clicks.float()[None], lambda_click, lambda_KL, noise=None)
    return {key: value[0] for key, value in terms.items()}


def test_loss_components_combine_with_reference_weights() -> None:
    torch.manual_seed(0)
    model = GeMS()
    slates, clicks = _batch()
    out = _terms(model, slates, clicks)  # the reference weights λ_click 0.5, λ_KL 1.0
    assert set(out) == {"total", "slate_ce", "click_bce", "kl"}
    torch.testing.assert_close(out["total"], out["slate_ce"] + 0.5 * out["click_bce"] + 1.0 * out["kl"])
    # Each term is a mean: check against the textbook formulas on the solo model's encode/decode.
    expected = reference_terms(model, slates, clicks)
    for key in out:
        torch.testing.assert_close(out[key], expected[key], msg=key)
    mu, logvar = model.encode(slates, clicks)
    item_logits, _ = model.decode(mu)
    torch.testing.assert_close(out["slate_ce"], -item_logits.log_softmax(-1).gather(-1, slates.unsqueeze(-1)).mean())
    post = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(out["kl"], torch.distributions.kl_divergence(post, prior).mean())
    weighted = _terms(model, slates, clicks, lambda_click=0.2, lambda_KL=0.0)
    torch.testing.assert_close(weighted["total"], weighted["slate_ce"] + 0.2 * weighted["click_bce"])


def test_accuracies_are_those_of_the_solo_decoder_per_member() -> None:
    # Three items, so that an untrained decoder gets about a third of the slots right, differently per member.
    torch.manual_seed(0)
    models = [GeMS(num_items=3), GeMS(num_items=3)]
    g = torch.Generator().manual_seed(2)
    slates = torch.randint(0, 3, (2, 64, K), generator=g)
    clicks = (torch.rand(2, 64, K, generator=g) < 0.5).float()
    got = GeMSStack(models, torch.device("cpu")).accuracies(slates, clicks)
    for k, model in enumerate(models):
        with torch.no_grad():
            item_logits, click_logits = model.decode(model.encode(slates[k], clicks[k])[0])
        slate_accuracy = (item_logits.argmax(-1) == slates[k]).float().mean().item()
        assert 0.05 < slate_accuracy < 0.95  # a check that can tell members and off-by-one slots apart
        assert got["slate_accuracy"][k].item() == pytest.approx(slate_accuracy)
        assert got["click_accuracy"][k].item() == pytest.approx(((click_logits > 0).float() == clicks[k]).float().mean().item())


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    zeros = torch.zeros(1, B, D)
    assert gaussian_kl_to_standard_normal(zeros, zeros).tolist() == [0.0]
    assert gaussian_kl_to_standard_normal(zeros + 0.5, zeros).item() == pytest.approx(0.125)
    assert gaussian_kl_to_standard_normal(zeros, zeros - 1.0).item() > 0.0
    # One mean per member: member 1 at the prior, member 0 not.
    both = gaussian_kl_to_standard_normal(torch.stack([zeros[0] + 0.5, zeros[0]]), torch.zeros(2, B, D))
    assert both.tolist() == pytest.approx([0.125, 0.0])


@pytest.mark.parametrize("noise, expected_scale", [("variance", 0.25), ("std", 0.5)])
def test_reparameterisation_noise_scale(noise: str, expected_scale: float) -> None:
    mu, logvar = torch.ones(4, D), torch.full((4, D), math.log(0.25))  # sigma 0.5, variance 0.25
    eps = torch.randn(4, D, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(reparameterise(mu, logvar, eps, noise), 1.0 + eps * expected_scale)


def test_reconstruction_loss_does_not_train_the_item_table_through_the_decoder() -> None:
    torch.manual_seed(0)
    model = GeMS()
    z = torch.randn(B, D)
    with torch.enable_grad():  # independent of a global grad mode left by other code
        item_logits, _ = model.decode(z)
        item_logits.sum().backward()
    assert model.item_embeddings.weight.grad is None
    assert model.slate_head.weight.grad is not None


def test_action_bounds_contain_every_posterior_mean_and_are_tight() -> None:
    torch.manual_seed(0)
    model = GeMS()
    g = torch.Generator().manual_seed(3)
    slates = torch.randint(0, N, (500, K), generator=g)
    clicks = (torch.rand(500, K, generator=g) < 0.3).long()
    center, scale = model.action_bounds(slates, clicks, chunk_size=64)
    assert center.shape == scale.shape == (D,) and bool((scale > 0).all())
    with torch.no_grad():
        mu, logvar = model.encode(slates, clicks)
    sigma = (0.5 * logvar).exp()
    low, high = center - scale, center + scale
    assert bool(((mu >= low) & (mu <= high)).all())
    torch.testing.assert_close(low, (mu - sigma).min(0).values)
    torch.testing.assert_close(high, (mu + sigma).max(0).values)
    # Chunking must not change the result.
    c2, s2 = model.action_bounds(slates, clicks, chunk_size=10_000)
    torch.testing.assert_close(c2, center)
    torch.testing.assert_close(s2, scale)


def test_config_defaults_are_the_reference_and_bad_values_are_refused() -> None:
    cfg = GeMSConfig()
    assert (cfg.latent_dim, cfg.lambda_click, cfg.lambda_KL, cfg.lambda_prior) == (32, 0.5, 1.0, 0.0)
    assert (cfg.batch_size, cfg.lr, cfg.max_epochs, cfg.val_fraction) == (256, 1e-3, 15, 0.1)
    with pytest.raises(BadInput, match="gems.lambda_prior"):
        GeMSConfig(lambda_prior=0.1).validate()
    with pytest.raises(BadInput, match="gems.reparam_noise"):
        GeMSConfig(reparam_noise="sd").validate()
    slates, clicks, _ = prototype_slates(episodes=4, steps=10)
    with pytest.raises(ValueError, match="shape"):
        train_gems(slates, clicks[:, :5], GeMSConfig(max_epochs=1), seed=0)


def test_brief_training_reconstructs_structured_slates_far_better_than_chance() -> None:
    # 20 prototype slates, 20 % of slots replaced by random items. Chance per slot is 1/1000; a decoder
    # that ignores z can reach only ~5 % (the most frequent prototype's share × 0.8). Identifying the
    # prototype from z gives up to ~80 %. Requiring 50 % means z really carries the slate.
    slates, clicks, z_free = prototype_slates(episodes=100, steps=100, seed=0)
    assert z_free < 0.1
    untrained = GeMSStack([GeMS()], torch.device("cpu"))
    before = untrained.accuracies(slates[:20].flatten(0, 1)[None], clicks[:20].flatten(0, 1).float()[None])
    assert before["slate_accuracy"].item() < 0.01

    history: list[dict[str, float]] = []
    model, metrics = train_gems(slates, clicks, GeMSConfig(max_epochs=3), seed=1, progress_callback=history.append)

    assert metrics["n_val_slates"] == 1_000 and metrics["n_train_slates"] == 9_000  # first 10 episodes
    assert len(history) == metrics["epochs_run"] == 3
    assert metrics["val_loss"] == min(h["val_loss"] for h in history)
    assert history[metrics["best_epoch"]]["val_loss"] == metrics["val_loss"]
    assert metrics["val_slate_accuracy"] > 0.5
    # Clicks follow a per-prototype pattern on the 80 % non-replaced slots: ~40 % of slots are clicked,
    # so "never click" scores ~0.6, while decoding the prototype's pattern scores ~0.9.
    never_click = 1.0 - clicks[:10].float().mean().item()
    assert never_click < 0.7
    assert metrics["val_click_accuracy"] > 0.8
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert not model.training


@pytest.mark.slow
def test_pretraining_on_simulator_logged_slates_reconstructs_far_better_than_chance() -> None:
    # Real logged data: 300 episodes of the ε-greedy oracle (ε = 0.5) on focused_topdown. Half the slots
    # are uniformly random items, so even a perfect model is far from 100 %; the baselines that ignore z
    # are chance (1/1000) and the most frequent training item per slot (measured below, ~0.7 %).
    from slatectl.pretrain.logged import LoggedDataConfig, generate_logged_data
    from slatectl.sim.factory import make_env

    data = generate_logged_data(make_env("focused_topdown"), LoggedDataConfig(episodes=300, seed=11))
    slates, clicks = data.slates.long(), data.clicks.float()
    _, metrics = train_gems(slates, clicks, GeMSConfig(max_epochs=3, val_fraction=0.2), seed=3)

    n_val = metrics["n_val_slates"]
    flat = slates.reshape(-1, K)
    majority = (flat[:n_val] == torch.mode(flat[n_val:], dim=0).values).float().mean().item()
    assert majority < 0.02
    # 60,000 held-out slot predictions: the accuracy's standard error is < 0.002, so these margins are
    # about model quality, not noise.
    assert metrics["val_slate_accuracy"] > max(20 / N, 4 * majority)
    assert metrics["val_slate_ce"] < math.log(N) - 1.0
    # Clicks: BCE below the entropy of the base click rate (what a z-blind constant predictor achieves).
    rate = clicks[: n_val // 100].mean().item()
    base_entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert metrics["val_click_bce"] < base_entropy - 0.01


def test_textbook_reparameterisation_also_learns() -> None:
    slates, clicks, _ = prototype_slates(episodes=100, steps=100, seed=2)
    _, metrics = train_gems(slates, clicks, GeMSConfig(max_epochs=2, reparam_noise="std"), seed=0)
    assert metrics["val_slate_accuracy"] > 0.5


def test_training_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    slates, clicks, _ = prototype_slates(episodes=20, steps=100, seed=4)
    cfg = GeMSConfig(max_epochs=1, max_slates=1_500)
    rng_before = torch.random.get_rng_state()
    a, ma = train_gems(slates, clicks, cfg, seed=7)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # caller's RNG untouched
    b, mb = train_gems(slates, clicks, cfg, seed=7)
    c, _ = train_gems(slates, clicks, cfg, seed=8)
    assert ma["n_train_slates"] + ma["n_val_slates"] == 1_500
    assert ma["val_loss"] == mb["val_loss"]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.slate_head.weight, c.slate_head.weight)


def test_without_validation_the_last_epoch_is_kept_and_val_metrics_are_nan() -> None:
    slates, clicks, _ = prototype_slates(episodes=10, steps=100, seed=5)
    model, metrics = train_gems(slates, clicks, GeMSConfig(max_epochs=2, val_fraction=0.0, max_slates=600), seed=0)
    assert metrics["n_val_slates"] == 0 and metrics["n_train_slates"] == 600
    assert metrics["best_epoch"] == 1 and math.isnan(metrics["val_loss"])
    assert math.isnan(metrics["val_slate_accuracy"])


def test_compact_dtypes_are_accepted() -> None:
    # Logged data may be stored as int16 ids / uint8 clicks; results must not depend on the dtype.
    torch.manual_seed(0)
    model = GeMS()
    slates, clicks = _batch()
    for wide, compact in zip(model.encode(slates, clicks), model.encode(slates.to(torch.int16), clicks.to(torch.uint8))):
        torch.testing.assert_close(wide, compact)
    c1, s1 = model.action_bounds(slates, clicks)
    c2, s2 = model.action_bounds(slates.to(torch.int16), clicks.to(torch.uint8))
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(s1, s2)


def test_the_epoch_loop_reads_nothing_back_per_batch(monkeypatch) -> None:
    # On a GPU every host read (`.item()`, `float(t)`, `.cpu()`, …) waits for the device: the loop must
    # read the losses once per epoch, not per batch. Four times the batches must mean no more reads.
    from host_reads import count_host_reads

    slates, clicks, _ = prototype_slates(episodes=20, steps=100, seed=6)
    reads = count_host_reads(monkeypatch)
    totals = []
    for batch_size in (128, 32):  # 15 and 57 training batches per epoch, the same validation slates
        reads.clear()
        batches: list[int] = []
        train_gems(slates, clicks, GeMSConfig(max_epochs=2, batch_size=batch_size), seed=0,
                   batch_callback=lambda epoch, done, total: batches.append(done))
        totals.append(sum(reads.values()))
        assert len(batches) == 2 * math.ceil(1_800 / batch_size)
    assert totals[0] > 0, "the counter saw no reads at all: the patching does not work"
    assert totals[1] == totals[0], f"host reads grow with the number of batches: {dict(reads)}"
