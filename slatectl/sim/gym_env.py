"""Gymnasium view of one TopicRec user: `gymnasium.make("slatectl/TopicRec-focused_topdown-v0")`.

The batched core runs with B = 1, on the CPU (observations are numpy arrays). Observation = the slate shown
(int16 item ids) and its clicks (uint8) (Box spaces); action = a slate of K item ids (−1 lets the env's oracle
fill a position); reward = clicks as float32: the dtypes of the collected datasets (docs/offline.md). For an
env in a dataset's own spaces (with its encoder's latent features and actions) use
`slatectl.make_env(dataset=…)`. Each `reset(seed=s)` starts a new user:
user id = number of resets since the env's seed was set, so a seeded env replays the same users.

An episode ends only by its time limit (H = 100 steps): `step` then returns `terminated=False,
truncated=True` (gymnasium's convention for a time limit: the user's state is not terminal, and a learner
that bootstraps should bootstrap there). The agents of this project follow the reference and do not
bootstrap at the episode's end; that is their training choice (docs/algorithms.md), not the env's.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from slatectl.sim.factory import make_env


class TopicRecGymEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, env_name: str, item_embeddings: str | Path | None = None):
        self.sim = make_env(env_name, item_embeddings)
        cfg = self.sim.config
        self.observation_space = spaces.Dict({
            "slate": spaces.Box(0, cfg.num_items - 1, shape=(cfg.slate_size,), dtype=np.int16),
            "clicks": spaces.Box(0, 1, shape=(cfg.slate_size,), dtype=np.uint8),
        })
        self.action_space = spaces.Box(-1, cfg.num_items - 1, shape=(cfg.slate_size,), dtype=np.int16)
        self._seed = 0
        self._next_user = 0

    def _obs(self, observation) -> dict[str, np.ndarray]:
        # The dtypes of the datasets (docs/offline.md): int16 item ids, uint8 clicks.
        return {"slate": observation.slate[0].numpy().astype(np.int16), "clicks": observation.clicks[0].numpy().astype(np.uint8)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed, self._next_user = int(seed), 0
        observation = self.sim.reset(torch.tensor([self._next_user], device="cpu"), self._seed)
        self._next_user += 1
        return self._obs(observation), {"user_state": self.sim.user[0].numpy().copy()}

    def step(self, action):
        slate = torch.as_tensor(np.asarray(action, dtype=np.int64), device="cpu").reshape(1, -1)
        if slate.shape[1] != self.sim.config.slate_size or bool((slate >= self.sim.config.num_items).any()) or bool((slate < -1).any()):
            raise ValueError(f"action must be {self.sim.config.slate_size} item ids in [-1, {self.sim.config.num_items - 1}]")
        result = self.sim.step(slate)
        info = {"user_state": result.user_state[0].numpy(), "bored": result.bored[0].numpy()}
        terminated, truncated = False, bool(result.done)  # the only episode end is the time limit
        return self._obs(result.observation), np.float32(result.reward[0]), terminated, truncated, info

