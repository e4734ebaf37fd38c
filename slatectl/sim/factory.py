"""Build a TopicRec for a named environment, with generated or file-loaded item embeddings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from slatectl.sim.config import EnvConfig, embedding_generator_params, load_env_config
from slatectl.sim.embeddings import generate_item_embeddings, load_item_embeddings
from slatectl.sim.topicrec import TopicRec


@lru_cache(maxsize=8)
def _generated_table(variant: str, num_items: int, num_topics: int, topic_size: int) -> torch.Tensor:
    params = embedding_generator_params(variant)
    return generate_item_embeddings(params["seed"], num_items, num_topics, topic_size, power=params["power"])


def env_item_embeddings(config: EnvConfig, item_embeddings: str | Path | None = None) -> torch.Tensor:
    """The env's item table: from `item_embeddings` (.npy) when given, else the seeded generator's."""
    if item_embeddings is not None:
        return load_item_embeddings(item_embeddings, config.num_items, config.embedding_dim)
    return _generated_table(config.item_embeddings, config.num_items, config.num_topics, config.topic_size).clone()


def make_env(name: str | EnvConfig, item_embeddings: str | Path | None = None,
             device: torch.device | str = "cpu") -> TopicRec:
    """The named env's simulator on `device` (its item table is built on the CPU, then moved)."""
    config = name if isinstance(name, EnvConfig) else load_env_config(name)
    return TopicRec(config, env_item_embeddings(config, item_embeddings).to(device))
