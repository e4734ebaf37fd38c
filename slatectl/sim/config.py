"""Typed environment configuration, read once from `configs/envs/<name>.yaml` and validated there."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import yaml

from slatectl.configs import (ALL_ENVS, EnvSelection, check_env_name, env_dir, env_names,  # noqa: F401 - this module's API
                              select_envs)
from slatectl.errors import BadInput

CLICK_MODELS = ("tdPBM", "mixPBM")
EMBEDDING_VARIANTS = ("focused", "diffuse")


@dataclass(frozen=True)
class EnvConfig:
    name: str
    item_embeddings: str  # "focused" | "diffuse" (generated) - a file can be passed separately
    click_model: str
    diversity_penalty: float
    num_items: int = 1000
    slate_size: int = 10
    num_topics: int = 10
    topic_size: int = 2
    episode_length: int = 100
    offset: float = 0.28
    slope: float = 100.0
    omega: float = 0.9
    short_term_boost: float = 1.0
    boredom_threshold: int = 5
    recent_items_maxlen: int = 10
    boredom_moving_window: int = 5
    diversity_threshold: int = 4
    bored_timeout: int = 5

    @property
    def embedding_dim(self) -> int:
        return self.num_topics * self.topic_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _validated(cfg: EnvConfig) -> EnvConfig:
    problems = []
    if cfg.click_model not in CLICK_MODELS:
        problems.append(f"click_model must be one of {', '.join(CLICK_MODELS)} (got {cfg.click_model!r})")
    if cfg.item_embeddings not in EMBEDDING_VARIANTS:
        problems.append(f"item_embeddings must be one of {', '.join(EMBEDDING_VARIANTS)} (got {cfg.item_embeddings!r})")
    if cfg.slate_size > cfg.num_items:
        problems.append("slate_size must not exceed num_items")
    for name in ("num_items", "slate_size", "num_topics", "topic_size", "episode_length", "recent_items_maxlen", "bored_timeout"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be >= 1")
    if not 0.0 <= cfg.omega <= 1.0:
        problems.append("omega must lie in [0, 1]")
    if cfg.diversity_penalty <= 0:
        problems.append("diversity_penalty must be > 0")
    if problems:
        raise BadInput(f"invalid environment config {cfg.name!r}: " + "; ".join(problems) + ".")
    return cfg


def load_env_config(name: str) -> EnvConfig:
    check_env_name(name)
    raw = yaml.safe_load(env_dir().joinpath(f"{name}.yaml").read_text())
    allowed = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise BadInput(f"configs/envs/{name}.yaml has unknown keys: {', '.join(unknown)}.")
    return _validated(EnvConfig(**raw))


def embedding_generator_params(variant: str) -> dict[str, Any]:
    """Seed and power of the generated table for 'focused' / 'diffuse' (configs/envs/embeddings.yaml)."""
    raw = yaml.safe_load(env_dir().joinpath("embeddings.yaml").read_text())
    if variant not in raw:
        raise BadInput(f"no generator parameters for item embeddings {variant!r} in configs/envs/embeddings.yaml.")
    return {"seed": int(raw[variant]["seed"]), "power": float(raw[variant].get("power", 1.0))}
