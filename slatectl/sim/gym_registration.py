"""Gymnasium ids of the six environments, registered without importing torch.

The entry point is a string ("module:Class"), so gymnasium imports the torch-backed env class only when
`gymnasium.make` builds one; `import slatectl.sim` stays cheap for the CLI and still registers the ids.
A string entry point also keeps the spec JSON-serialisable (Minari stores it with datasets).
"""

from __future__ import annotations

import gymnasium as gym

from slatectl.sim.config import env_names, load_env_config

ENTRY_POINT = "slatectl.sim.gym_env:TopicRecGymEnv"


def gym_env_id(env_name: str) -> str:
    return f"slatectl/TopicRec-{env_name}-v0"


def register_gym_envs() -> None:
    for name in env_names():
        env_id = gym_env_id(name)
        if env_id not in gym.envs.registry:
            # max_episode_steps = H records the time limit in the spec (and in Minari datasets); the
            # TimeLimit wrapper it adds truncates at the same step as the env itself.
            gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"env_name": name},
                         max_episode_steps=load_env_config(name).episode_length)
