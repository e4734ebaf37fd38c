"""`slatectl relabel DATASET`: the same transitions with another encoder's features, without re-simulating.

The encoder features are a function of the recorded item ids and clicks (slatectl/collect/encoder.py), so
a dataset is relabelled by recomputing `observations/latent`, `actions/latent` and `final/latent` from
its id arrays. The result is a new dataset (new file, new registry row, `relabelled_from` in its
metadata) with the same lineage; the original is never changed. A dataset of the first layout (each
agent's own belief and latent under `observations/belief` and `actions/latent`) is brought to the
current one on the way: those arrays move to `agent/belief` and `agent/latent`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slatectl.collect.collector import FORMAT_VERSION, new_scratch, spaces_metadata
from slatectl.collect.encoder import encode_arrays, resolve_encoder
from slatectl.collect.npz import METADATA_KEY, load_npz, write_npz
from slatectl.domain import DatasetFormat
from slatectl.errors import BadInput
from slatectl.registry import Dataset, Registry
from slatectl.sim.config import load_env_config

#: First-layout names → current ones (the collecting agent's extras).
_FIRST_LAYOUT = {"observations/belief": "agent/belief", "actions/latent": "agent/latent"}


def _current_layout(arrays: dict[str, np.ndarray], metadata: dict, horizon: int) -> dict[str, np.ndarray]:
    if metadata.get("format_version", 1) >= 2:
        return {name: a for name, a in arrays.items() if not name.endswith("/latent") or name == "agent/latent"}
    upgraded = {_FIRST_LAYOUT.get(name, name): a for name, a in arrays.items()}
    upgraded = {name: a for name, a in upgraded.items() if not (name.startswith("agent/") and a.shape[-1] == 0)}
    # The first layout had no final slate: it is the slate recommended at each episode's last step.
    upgraded["final/slate"] = arrays["actions/slate"].reshape(-1, horizon, arrays["actions/slate"].shape[-1])[:, -1]
    for flag in ("terminals", "timeouts"):
        upgraded[flag] = upgraded[flag].astype(np.bool_)
    return upgraded


def relabel_dataset(registry: Registry, dataset_id: int, encoder: int | str | None = None) -> Dataset:
    """A new dataset: dataset `dataset_id`'s transitions with `encoder`'s features (an artifact id, "none",
    or None for the env's default encoder)."""
    source = registry.get_dataset(dataset_id)
    if source.format != DatasetFormat.NPZ:
        raise BadInput(f"dataset {dataset_id} is a {source.format} export; relabel the npz dataset it was "
                       f"collected as (collect with --format npz).")
    arrays, metadata = load_npz(registry.dataset_path(dataset_id))
    config = load_env_config(source.env)
    resolved = resolve_encoder(registry, source.env, encoder)
    arrays = _current_layout(arrays, metadata, config.episode_length)
    arrays.update(encode_arrays(arrays, resolved))
    metadata = {**metadata, **spaces_metadata(config, resolved), "format_version": FORMAT_VERSION,
                "relabelled_from": dataset_id}
    if resolved is None:
        for key in ("observation_latent_dim", "action_low", "action_high"):
            metadata.pop(key, None)
    arrays[METADATA_KEY] = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    with new_scratch(registry) as scratch:
        path = Path(scratch) / "dataset.npz"
        write_npz(path, arrays)
        return registry.register_dataset(
            source.env, source.quality, path, episodes=source.episodes, transitions=source.transitions,
            return_mean=source.return_mean, return_std=source.return_std, format=DatasetFormat.NPZ,
            seed=source.seed, checkpoint_id=source.checkpoint_id, promotion_id=source.promotion_id,
            policy=source.policy, metadata=metadata)
