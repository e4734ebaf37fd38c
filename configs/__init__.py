"""The YAML configs shipped with slatectl (installed as `slatectl.configs`): envs/, agents/, training.yaml,
pretrain.yaml, quickstart.yaml.

`env_names()` lists the environments defined here, and `select_envs` parses an `--env` value (a name,
`all`, or E1,E2,…) into them, the one place that knows that syntax. They live with the files they list,
not in the simulator, so commands that only need the names (the registry's `ckpt list --env`) start
without importing the simulator or gymnasium.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from slatectl.domain import RANDOM_POLICY
from slatectl.errors import BadInput

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


def check_env_name(name: str) -> str:
    """`name` when it is a shipped environment; BadInput naming the known ones otherwise."""
    known = env_names()
    if name not in known:
        raise BadInput(f"unknown environment {name!r}. Known environments: {', '.join(known)} (see `slatectl env list`).")
    return name


#: The `--env` value (and sweep spec `envs:` value) that selects every shipped environment.
ALL_ENVS = "all"


@dataclass(frozen=True)
class EnvSelection:
    """What an `--env` option selected, parsed once: known env names, and how they were named."""

    names: tuple[str, ...]
    every: bool = False  # `all`
    listed: bool = False  # a comma-separated list E1,E2,… (a population, for `train`)

    @property
    def several(self) -> bool:
        """`all` or a list (even of one name): the commands that stack envs treat both alike."""
        return self.every or self.listed


def select_envs(text: str, lists: bool = True) -> EnvSelection:
    """Parse an `--env` value: an env name, `all`, or (with `lists`) E1,E2,… of distinct env names.

    The one place that knows this syntax; BadInput for an unknown name, a repeated one or an empty list.
    """
    if text == ALL_ENVS:
        return EnvSelection(tuple(env_names()), every=True)
    if not lists or "," not in text:
        return EnvSelection((check_env_name(text),))
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise BadInput(f"--env must be an environment, `all` or a comma-separated list of distinct environments "
                       f"(got {text!r}).")
    return EnvSelection(tuple(check_env_name(name) for name in names), listed=True)


# Agents configured in agents/*.yaml that are never trained (so never have checkpoints): `random` is the
# uniform random slate policy behind `collect --quality random`.
_UNTRAINED_POLICIES = (RANDOM_POLICY,)


def agent_dir() -> Traversable:
    return resources.files(__name__).joinpath("agents")


def trained_agent_names() -> list[str]:
    """The agents of agents/*.yaml that `slatectl train` trains (sorted), read from the file names so the
    registry-only commands (`ckpt list --agent`) can check a name without importing torch."""
    names = (p.name[:-5] for p in agent_dir().iterdir() if p.name.endswith(".yaml"))
    return sorted(name for name in names if name not in _UNTRAINED_POLICIES)
