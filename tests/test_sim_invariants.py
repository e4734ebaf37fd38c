"""Determinism, batch-size independence and the simulator's invariants."""

import pytest
import torch

from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.topicrec import normalise_user


def _episode(env_name, policy_name, users, seed):
    env = make_env(env_name)
    policy = POLICIES[policy_name]()
    ids = torch.as_tensor(users)
    env.reset(ids, seed)
    policy.reset(ids, seed)
    slates, clicks, rewards, dones = [], [], [], []
    done = False
    while not done:
        result = env.step(policy.act(env))
        slates.append(result.observation.slate)
        clicks.append(result.observation.clicks)
        rewards.append(result.reward)
        dones.append(result.done)
        done = result.done
    return env, torch.stack(slates, 1), torch.stack(clicks, 1), torch.stack(rewards, 1), dones


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_same_seed_same_trajectories_and_other_seed_differs(policy_name):
    _, s1, c1, r1, _ = _episode("diffuse_mix", policy_name, range(16), seed=5)
    _, s2, c2, r2, _ = _episode("diffuse_mix", policy_name, range(16), seed=5)
    _, _, c3, _, _ = _episode("diffuse_mix", policy_name, range(16), seed=6)
    assert torch.equal(s1, s2) and torch.equal(c1, c2) and torch.equal(r1, r2)
    assert not torch.equal(c1, c3)


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_user_trajectory_does_not_depend_on_batch_size_or_neighbours(policy_name):
    users = [3, 11, 12, 40, 999]
    _, s_all, c_all, _, _ = _episode("focused_divpen", policy_name, users, seed=9)
    _, s_big, c_big, _, _ = _episode("focused_divpen", policy_name, list(range(1000)), seed=9)
    for b, user in enumerate(users):
        _, s_one, c_one, _, _ = _episode("focused_divpen", policy_name, [user], seed=9)
        assert torch.equal(s_one[0], s_all[b]) and torch.equal(c_one[0], c_all[b])
        assert torch.equal(s_one[0], s_big[user]) and torch.equal(c_one[0], c_big[user])


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_slates_clicks_rewards_and_episode_length(policy_name):
    env, slates, clicks, rewards, dones = _episode("focused_mix", policy_name, range(64), seed=1)
    H, K, N = env.config.episode_length, env.config.slate_size, env.config.num_items
    assert slates.shape == (64, H, K) and dones == [False] * (H - 1) + [True]
    assert bool(((slates >= 0) & (slates < N)).all())
    if policy_name != "eps-oracle":  # the ε-oracle's random items may coincide with oracle items (spec)
        assert bool((slates.sort(dim=-1).values.diff(dim=-1) != 0).all()), "slate items must be distinct"
    assert set(clicks.unique().tolist()) <= {0, 1}
    assert torch.equal(rewards, clicks.sum(dim=-1).float())
    with pytest.raises(RuntimeError):
        env.step(torch.zeros(64, K, dtype=torch.int64))


def test_user_embedding_stays_normalised_by_sum_of_chunk_norms():
    env, *_ = _episode("diffuse_topdown", "oracle", range(32), seed=2)
    sums = env.user.view(32, 10, 2).norm(dim=-1).sum(dim=-1)
    torch.testing.assert_close(sums, torch.ones(32), rtol=0, atol=1e-5)
    torch.testing.assert_close(normalise_user(env.user, 10), env.user, rtol=0, atol=1e-6)


def test_initial_slate_is_best_item_of_each_topic():
    env = make_env("focused_topdown")
    obs = env.reset(torch.arange(4), seed=0)
    chunk = env.item_embeddings.view(-1, 10, 2).norm(dim=-1)
    for topic in range(10):
        assert int(obs.slate[0, topic]) == int(chunk[:, topic].argmax())
    assert torch.equal(obs.slate[0], obs.slate[3])


def test_bad_slate_shape_is_refused():
    env = make_env("focused_topdown")
    env.reset(torch.arange(2), seed=0)
    with pytest.raises(ValueError):
        env.step(torch.zeros(2, 9, dtype=torch.int64))
