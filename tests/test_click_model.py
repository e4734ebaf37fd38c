"""Click model, relevance and diversity penalty against the spec's formulas (property tests)."""

import math

import torch
from hypothesis import given, settings, strategies as st

from slatectl.sim.click_model import click_probabilities, diversity_penalty_factor, examination_propensities, relevance
from slatectl.sim.rng import CounterRNG, pcg_hash


def test_propensities_match_spec_tables():
    td = examination_propensities("tdPBM", 10)
    mix = examination_propensities("mixPBM", 10)
    torch.testing.assert_close(td, torch.tensor([0.85**r for r in range(10)]))
    expected_mix = [1.0, 0.6158, 0.5612, 0.5215, 0.4956, 0.4829, 0.4829, 0.4956, 0.5215, 0.5612, 0.6158]
    torch.testing.assert_close(mix, torch.tensor(expected_mix[1:]), atol=1e-4, rtol=0)


@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=20), st.floats(0.0, 0.6), st.floats(1.0, 200.0))
def test_relevance_is_the_sigmoid_of_the_scaled_score(scores, offset, slope):
    got = relevance(torch.tensor(scores, dtype=torch.float64), offset, slope)
    expected = [1.0 / (1.0 + math.exp(-slope * (s - offset))) for s in scores]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


@settings(max_examples=200)
@given(st.lists(st.integers(0, 9), min_size=10, max_size=10), st.sampled_from([1.0, 3.0]), st.integers(2, 6))
def test_diversity_penalty_applies_iff_some_topic_reaches_the_threshold(topics, penalty, threshold):
    factor = float(diversity_penalty_factor(torch.tensor([topics]), 10, threshold, penalty)[0])
    crowded = max(topics.count(t) for t in set(topics)) >= threshold
    assert factor == (penalty if crowded else 1.0)


@settings(max_examples=100)
@given(st.lists(st.floats(0.0, 1.0), min_size=10, max_size=10), st.lists(st.integers(0, 9), min_size=10, max_size=10),
       st.sampled_from(["tdPBM", "mixPBM"]))
def test_click_probability_is_relevance_over_penalty_times_propensity(rel, topics, model):
    prop = examination_propensities(model, 10)
    probs = click_probabilities(torch.tensor([rel]), torch.tensor([topics]), prop, 10, 4, 3.0)
    divisor = 3.0 if max(topics.count(t) for t in set(topics)) >= 4 else 1.0
    torch.testing.assert_close(probs[0], torch.tensor(rel) / divisor * prop)


def test_counter_rng_uniforms_have_the_moments_of_u01():
    # 10^6 draws: the mean's SEM is sqrt(1/12/1e6) ≈ 2.9e-4, so 5 SEM ≈ 1.5e-3; the variance of a
    # uniform's square deviation is 1/180, giving an SEM of the variance estimate ≈ 7.5e-5.
    u = CounterRNG(123, 0, torch.arange(100_000)).uniform(0, 10).double()
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())
    assert abs(float(u.var()) - 1 / 12) < 5 * math.sqrt(1 / 180 / u.numel())
    z = CounterRNG(123, 0, torch.arange(100_000)).normal(0, 10).double()
    assert abs(float(z.mean())) < 5 / math.sqrt(z.numel())
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2 / z.numel())


def test_distinct_items_are_distinct_and_uniform():
    items = CounterRNG(7, 1, torch.arange(50_000)).distinct_items(0, 1000, 10)
    assert bool((items.sort(dim=1).values.diff(dim=1) != 0).all())
    # Each item at each position: count ~ Binomial(50000, 1/1000), mean 50, sd ≈ 7.07; chi-square per
    # position over 1000 cells has mean 999 and sd ≈ 44.7 — allow 5 sd.
    for position in (0, 9):
        counts = torch.bincount(items[:, position], minlength=1000).double()
        chi2 = float(((counts - 50.0) ** 2 / 50.0).sum())
        assert abs(chi2 - 999) < 5 * math.sqrt(2 * 999)


def test_counter_rng_draws_are_one_hash_of_key_and_counter_inside_and_beyond_the_counter_table():
    """A draw is hash(key XOR hash(hash(c) XOR 0x9E3779B9)), written out here with the hash alone; counters
    below 2^14 come from the per-device table, the others are hashed on the spot: both must give it."""
    rng = CounterRNG(5, 2, torch.tensor([0, 3, 2**33 + 1]))
    for counter in (0, 6_400, 2**14 - 4, 2**14, 2**40):
        counters = torch.arange(counter, counter + 8, dtype=torch.int64) & 0xFFFFFFFF
        expected = pcg_hash(rng.key[:, None] ^ pcg_hash(pcg_hash(counters) ^ 0x9E3779B9)[None, :])
        assert torch.equal(rng.bits(counter, 8), expected), counter
