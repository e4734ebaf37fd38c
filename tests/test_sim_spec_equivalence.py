"""The batched simulator equals a plain one-user transcription of the spec, draw for draw."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from slatectl.sim.config import env_names, load_env_config
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from spec_reference import OneUserTopicRec


def _trajectories(env_name: str, policy_name: str, seed: int, users: list[int]):
    env = make_env(env_name)
    policy = POLICIES[policy_name]()
    ids = torch.tensor(users)
    first = env.reset(ids, seed)
    policy.reset(ids, seed)
    actions, shown, clicks, user_states, bored = [], [], [], [], []
    for _ in range(env.config.episode_length):
        action = policy.act(env)
        result = env.step(action)
        actions.append(action.clone())
        shown.append(result.observation.slate)
        clicks.append(result.observation.clicks)
        user_states.append(result.user_state)
        bored.append(result.bored)
    return env, first, torch.stack(actions, 1), torch.stack(shown, 1), torch.stack(clicks, 1), torch.stack(user_states, 1), torch.stack(bored, 1)


@settings(max_examples=12, deadline=None)
@given(env_name=st.sampled_from(env_names()), policy_name=st.sampled_from(sorted(POLICIES)),
       seed=st.integers(0, 2**40), first_user=st.integers(0, 10**6))
def test_batched_simulator_matches_one_user_spec_transcription(env_name, policy_name, seed, first_user):
    users = [first_user, first_user + 7, first_user + 1000]
    env, first, actions, shown, clicks, user_states, bored = _trajectories(env_name, policy_name, seed, users)
    reference = OneUserTopicRec(env.config, env.item_embeddings)
    for b, user in enumerate(users):
        slate0, clicks0 = reference.reset(user, seed)
        assert first.slate[b].tolist() == slate0
        assert first.clicks[b].tolist() == clicks0
        for t in range(env.config.episode_length):
            # Oracle items whose float64 scores differ by at most 1e-6 count as tied (float32 scores of
            # magnitude ~0.2 after 100 steps of float32 drift round at ~1e-7; ranks are typically 1e-4 apart).
            slate, step_clicks, reward, done = reference.step(actions[b, t].tolist(), near_ties=shown[b, t].tolist(),
                                                              tie_tolerance=1e-6)
            assert shown[b, t].tolist() == slate, f"user {user} step {t + 1}: shown slate differs"
            assert clicks[b, t].tolist() == step_clicks, f"user {user} step {t + 1}: clicks differ"
            assert bored[b, t].tolist() == reference.bored, f"user {user} step {t + 1}: bored topics differ"
            np.testing.assert_allclose(user_states[b, t].numpy(), reference.u, rtol=0, atol=1e-5)
            assert done == (t + 1 == env.config.episode_length)


def test_reset_clicks_enter_topic_log_without_timestamps():
    env = make_env("focused_topdown")
    obs = env.reset(torch.arange(200), seed=3)
    n_clicks = obs.clicks.sum(dim=1)
    assert int(n_clicks.max()) > 0, "some reset slate must be clicked for this test to mean anything"
    assert torch.equal(env.topic_len, n_clicks)
    assert torch.equal(env.time_len, torch.zeros_like(n_clicks))


def test_boredom_masks_a_topic_for_five_steps_then_rechecks():
    env = make_env("focused_topdown")
    env.reset(torch.tensor([0]), seed=0)
    L = env.config.recent_items_maxlen
    env.topic_log = torch.full((1, L), 3)
    env.topic_len = torch.tensor([5])  # topic 3 five times: reaches the threshold
    env.time_len = torch.tensor([0])
    env._update_boredom()
    assert env.bored[0].tolist() == [t == 3 for t in range(10)]
    env.topic_len = torch.tensor([0])  # the clicks have left the window
    masked_steps = 1
    while True:
        env._update_boredom()
        if not bool(env.bored[0, 3]):
            break
        masked_steps += 1
    assert masked_steps == env.config.bored_timeout
    assert int(env.bored_timeout[0, 3]) == env.config.bored_timeout


def test_bored_topic_is_invisible_to_the_oracle():
    env = make_env("focused_topdown")
    env.reset(torch.tensor([0]), seed=0)
    favourite = int(env.user.view(10, 2).norm(dim=1).argmax())
    env.bored[0, favourite] = True
    slate = env.oracle_slate()
    masked = env.masked_user()
    assert float(masked.view(10, 2)[favourite].abs().sum()) == 0.0
    assert bool((slate[0] >= 0).all())
