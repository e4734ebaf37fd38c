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


# Agents configured in agents/*.yaml that are never trained (so never have checkpoints): `random` is the
# uniform random slate policy behind `collect --quality random`.
_UNTRAINED_POLICIES = ("random",)


def agent_dir() -> Traversable:
    return resources.files(__name__).joinpath("agents")


def trained_agent_names() -> list[str]:
    """The agents of agents/*.yaml that `slatectl train` trains (sorted), read from the file names so the
    registry-only commands (`ckpt list --agent`) can check a name without importing torch."""
    names = (p.name[:-5] for p in agent_dir().iterdir() if p.name.endswith(".yaml"))
    return sorted(name for name in names if name not in _UNTRAINED_POLICIES)
