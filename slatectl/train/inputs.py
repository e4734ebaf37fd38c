"""The pretrained inputs an agent needs (logged data → GeMS / MF), found in the registry or built once.

Each input is a registered artifact keyed by its config (env, parameters, seed); a second run with the
same settings reuses it. Lineage: logged data ← env; GeMS and MF ← logged data.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from typing import Any, Callable

import torch

from slatectl.registry import Artifact, Registry
from slatectl.pretrain.gems_train import GeMSConfig, build_gems, train_gems
from slatectl.pretrain.logged import LoggedData, LoggedDataConfig, generate_logged_data
from slatectl.pretrain.mf import MFConfig, train_mf
from slatectl.sim.topicrec import TopicRec

LOGGED_KIND, GEMS_KIND, MF_KIND = "logged-data", "gems", "mf"
#: The reference computes GeMS action bounds from the first 1,000 logged episodes (100,000 slates).
BOUNDS_EPISODES = 1000

Say = Callable[[str], None]


def env_table_sha256(env: TopicRec) -> str:
    """The item table's hash, the same wherever the simulator runs: `data logged` and `pretrain` build their
    simulator on --device, and a CUDA tensor has no `.numpy()` (the copy is the same float32 bytes)."""
    return hashlib.sha256(env.item_embeddings.detach().cpu().numpy().tobytes()).hexdigest()


def _env_identity(env: TopicRec) -> dict[str, Any]:
    return {"env": env.config.name, "env_config": env.config.to_dict(), "item_table_sha256": env_table_sha256(env)}


def ensure_logged_data(registry: Registry, env: TopicRec, config: LoggedDataConfig, say: Say = print,
                       on_batch: Callable[[int], None] | None = None) -> Artifact:
    identity = {**_env_identity(env), "logged": asdict(config)}
    found = registry.find_artifact(LOGGED_KIND, env.config.name, config=identity)
    if found is not None:
        return found
    say(f"building logged data for {env.config.name}: {config.episodes:,} episodes of the ε-greedy oracle (ε = {config.epsilon})")
    data = generate_logged_data(env, config, on_batch=on_batch)
    returns = data.episode_returns
    metrics = {"episodes": config.episodes, "mean_return": float(returns.mean()), "std_return": float(returns.std())}
    return registry.register_artifact(LOGGED_KIND, env.config.name, data.state_dict(), config=identity, metrics=metrics)


def load_logged_data(registry: Registry, artifact: Artifact) -> LoggedData:
    return LoggedData.from_state_dict(registry.load_artifact_state(artifact.id))


def ensure_gems(registry: Registry, env: TopicRec, logged: Artifact, config: GeMSConfig, seed: int, say: Say = print,
                progress: Callable[[dict[str, float]], None] | None = None) -> Artifact:
    identity = {"env": env.config.name, "logged_artifact": logged.id, "gems": asdict(config), "seed": seed}
    found = registry.find_artifact(GEMS_KIND, env.config.name, config=identity)
    if found is not None:
        return found
    data = load_logged_data(registry, logged)
    slates = data.slates.numel() // data.slates.shape[-1]
    if config.max_slates is not None:
        slates = min(slates, config.max_slates)
    epochs = f"{config.max_epochs} epoch" + ("" if config.max_epochs == 1 else "s")
    say(f"pretraining GeMS for {env.config.name} (latent dim {config.latent_dim}, {epochs} over "
        f"{slates:,} logged slates, seed {seed}); progress is reported every quarter epoch")
    reports = _GeMSProgress(config.max_epochs, say)
    model, metrics = train_gems(data.slates.long(), data.clicks.float(), config, seed,
                                progress_callback=progress or reports.epoch_done, batch_callback=reports.batch_done)
    bounds_slates = data.slates[:BOUNDS_EPISODES].long().flatten(0, 1)
    bounds_clicks = data.clicks[:BOUNDS_EPISODES].float().flatten(0, 1)
    center, scale = model.action_bounds(bounds_slates, bounds_clicks)
    state = {"model": model.state_dict(), "action_center": center, "action_scale": scale}
    return registry.register_artifact(GEMS_KIND, env.config.name, state, config=identity,
                                      metrics=_jsonable(metrics), parents=[logged.id])


class _GeMSProgress:
    """Plain progress lines for a long pretraining (hours at the reference size on a CPU), with an ETA."""

    def __init__(self, epochs: int, say: Say):
        self.epochs, self.say = epochs, say
        self.started = time.perf_counter()

    def batch_done(self, epoch: int, done: int, total: int) -> None:
        quarter = max(total // 4, 1)
        if done % quarter or done == total:
            return
        fraction = (epoch + done / total) / self.epochs
        elapsed = time.perf_counter() - self.started
        self.say(f"GeMS epoch {epoch + 1}/{self.epochs}: {done:,}/{total:,} batches; "
                 f"{_duration(elapsed)} elapsed, about {_duration(elapsed / fraction - elapsed)} left")

    def epoch_done(self, row: dict[str, float]) -> None:
        self.say(f"GeMS epoch {int(row['epoch']) + 1}/{self.epochs} done: train loss {row['train_loss']:.4f}, "
                 f"validation loss {row['val_loss']:.4f} ({_duration(time.perf_counter() - self.started)} elapsed)")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {int(seconds % 60):02d} s"


def load_gems(registry: Registry, artifact: Artifact):
    state = registry.load_artifact_state(artifact.id)
    config = GeMSConfig(**artifact.config["gems"])
    model = build_gems(config)
    model.load_state_dict(state["model"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, (state["action_center"], state["action_scale"])


def ensure_mf(registry: Registry, env: TopicRec, logged: Artifact, config: MFConfig, seed: int, say: Say = print,
              device: str = "cpu") -> Artifact:
    identity = {"env": env.config.name, "logged_artifact": logged.id, "mf": asdict(config), "seed": seed}
    found = registry.find_artifact(MF_KIND, env.config.name, config=identity)
    if found is not None:
        return found
    say(f"pretraining MF item embeddings for {env.config.name} (BPR, seed {seed})")
    data = load_logged_data(registry, logged)
    table, metrics = train_mf(data.slates.long(), data.clicks.float(), config, seed, device=device)
    return registry.register_artifact(MF_KIND, env.config.name, {"item_embeddings": table}, config=identity,
                                      metrics=_jsonable(metrics), parents=[logged.id])


def load_mf(registry: Registry, artifact: Artifact) -> torch.Tensor:
    return registry.load_artifact_state(artifact.id)["item_embeddings"]


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, (int, float, str, bool, list, type(None))):
            out[key] = value
    return out
