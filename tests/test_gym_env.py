"""The gymnasium wrapper: registered ids, spaces, episode length, seeded reproducibility."""

import gymnasium as gym
import numpy as np
import pytest

import slatectl.sim  # noqa: F401  (registers the gymnasium ids)
from slatectl.sim.config import env_names


@pytest.mark.parametrize("env_name", env_names())
def test_every_env_is_registered(env_name):
    env = gym.make(f"slatectl/TopicRec-{env_name}-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def _play(seed):
    env = gym.make("slatectl/TopicRec-focused_topdown-v0")
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rewards, steps, truncated = [], 0, False
    while not truncated and steps < 1000:
        action = rng.choice(1000, size=10, replace=False)
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated  # episodes end only by the time limit: a truncation
        assert env.observation_space.contains(obs)
        assert reward == obs["clicks"].sum()
        rewards.append(reward)
        steps += 1
    return steps, rewards


def test_the_time_limit_is_in_the_spec():
    assert gym.spec("slatectl/TopicRec-diffuse_divpen-v0").max_episode_steps == 100


def test_episode_has_100_steps_and_seeded_reset_replays():
    steps, rewards = _play(seed=4)
    assert steps == 100
    assert _play(seed=4)[1] == rewards


def test_oracle_action_through_gym():
    env = gym.make("slatectl/TopicRec-focused_topdown-v0")
    env.reset(seed=1)
    obs, *_ = env.step(np.full(10, -1))
    assert (obs["slate"] >= 0).all() and len(set(obs["slate"].tolist())) == 10
    with pytest.raises(ValueError):
        env.step(np.full(10, 5000))
