"""The YAML configs shipped with slatectl (installed as `slatectl.configs`): envs/, agents/, training.yaml,
pretrain.yaml, quickstart.yaml.

`env_names()` lists the environments defined here. It lives with the files it lists, not in the
simulator, so commands that only need the names (the registry's `ckpt list --env`) start without
importing the simulator or gymnasium.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

_TOPIC_SPREAD_ORDER = ("focused", "diffuse")
_USER_MODEL_ORDER = {"topdown": 0, "mix": 1, "divpen": 2}


def env_dir() -> Traversable:
    return resources.files(__name__).joinpath("envs")


def env_names() -> list[str]:
    """The environments of envs/*.yaml in the paper's order: focused before diffuse; topdown, mix, divpen."""
    names = [p.name[:-5] for p in env_dir().iterdir() if p.name.endswith(".yaml") and p.name != "embeddings.yaml"]

    def order(name: str) -> tuple:
        spread, _, model = name.partition("_")
        return (spread not in _TOPIC_SPREAD_ORDER[:1], _USER_MODEL_ORDER.get(model, 9), name)

    return sorted(names, key=order)
