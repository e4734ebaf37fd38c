"""The pretrained inputs an agent needs (logged data → GeMS / MF), found in the registry or built once.

Each input is a registered artifact keyed by its config (env, parameters, seed); a second run with the
same settings reuses it. Lineage: logged data ← env; GeMS and MF ← logged data. Each is built under the
registry's build lock on its key (`build_once.py`): of several processes (or machines) that need the
same missing input, one builds it and the others wait for it.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from slatectl.registry import Artifact, Registry
from slatectl.train.build_once import build_key, built_once, holding, lock_holder, try_lock
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.gems_train import GeMSConfig, GeMSMember, build_gems, stack_groups, train_gems, train_stacked_gems
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

    def build() -> Artifact:
        return _build_logged_data(registry, env, config, identity, say, on_batch)

    return built_once(registry, build_key(LOGGED_KIND, env.config.name, identity),
                      lambda: registry.find_artifact(LOGGED_KIND, env.config.name, config=identity), build, say)


def _build_logged_data(registry: Registry, env: TopicRec, config: LoggedDataConfig, identity: dict[str, Any],
                       say: Say, on_batch: Callable[[int], None] | None) -> Artifact:
    say(f"building logged data for {env.config.name}: {config.episodes:,} episodes of the ε-greedy oracle (ε = {config.epsilon})")
    data = generate_logged_data(env, config, on_batch=on_batch)
    returns = data.episode_returns
    metrics = {"episodes": config.episodes, "mean_return": float(returns.mean()), "std_return": float(returns.std())}
    return registry.register_artifact(LOGGED_KIND, env.config.name, data.state_dict(), config=identity, metrics=metrics)


def load_logged_data(registry: Registry, artifact: Artifact) -> LoggedData:
    return LoggedData.from_state_dict(registry.load_artifact_state(artifact.id))


def _gems_identity(env_name: str, logged: Artifact, config: GeMSConfig, seed: int) -> dict[str, Any]:
    """A GeMS artifact's cache key, the same for a solo and a stacked pretraining (see ensure_gems_population)."""
    return {"env": env_name, "logged_artifact": logged.id, "gems": asdict(config), "seed": seed}


def _logged_slates(data: LoggedData, config: GeMSConfig) -> int:
    slates = data.slates.numel() // data.slates.shape[-1]
    return slates if config.max_slates is None else min(slates, config.max_slates)


def _register_gems(registry: Registry, env_name: str, logged: Artifact, identity: dict[str, Any], data: LoggedData,
                   model: GeMS, metrics: dict[str, Any]) -> Artifact:
    """The trained model with its action bounds (from the first BOUNDS_EPISODES logged episodes) as an
    artifact: the file is written completely, then the registry row."""
    bounds_slates = data.slates[:BOUNDS_EPISODES].long().flatten(0, 1)
    bounds_clicks = data.clicks[:BOUNDS_EPISODES].float().flatten(0, 1)
    center, scale = model.action_bounds(bounds_slates, bounds_clicks)
    state = {"model": model.state_dict(), "action_center": center, "action_scale": scale}
    return registry.register_artifact(GEMS_KIND, env_name, state, config=identity,
                                      metrics=_jsonable(metrics), parents=[logged.id])


def ensure_gems(registry: Registry, env: TopicRec, logged: Artifact, config: GeMSConfig, seed: int, say: Say = print,
                progress: Callable[[dict[str, float]], None] | None = None) -> Artifact:
    identity = _gems_identity(env.config.name, logged, config, seed)
    return built_once(registry, build_key(GEMS_KIND, env.config.name, identity),
                      lambda: registry.find_artifact(GEMS_KIND, env.config.name, config=identity),
                      lambda: _build_gems(registry, env, logged, config, seed, identity, say, progress), say)


def _build_gems(registry: Registry, env: TopicRec, logged: Artifact, config: GeMSConfig, seed: int,
                identity: dict[str, Any], say: Say, progress) -> Artifact:
    data = load_logged_data(registry, logged)
    epochs = f"{config.max_epochs} epoch" + ("" if config.max_epochs == 1 else "s")
    say(f"pretraining GeMS for {env.config.name} (latent dim {config.latent_dim}, {epochs} over "
        f"{_logged_slates(data, config):,} logged slates, seed {seed}); progress is reported every quarter epoch")
    reports = _GeMSProgress(config.max_epochs, say)
    model, metrics = train_gems(data.slates.long(), data.clicks.float(), config, seed,
                                progress_callback=progress or reports.epoch_done, batch_callback=reports.batch_done)
    return _register_gems(registry, env.config.name, logged, identity, data, model, metrics)


@dataclass(frozen=True)
class GeMSRequest:
    """One GeMS that `ensure_gems_population` finds or pretrains: as ensure_gems's arguments."""

    env: TopicRec
    logged: Artifact
    config: GeMSConfig
    seed: int


def ensure_gems_population(registry: Registry, requests: list[GeMSRequest], say: Say = print) -> list[Artifact]:
    """One GeMS artifact per request (in order): found in the registry, or pretrained together with the
    other missing ones as stacked populations (`slatectl.pretrain.gems_train`) and registered.

    The cache key is ensure_gems's: a stacked member is the solo algorithm (same data, seed, draws, batch
    order, Adam) computed with batched kernels, so it differs from the solo result only by float rounding,
    as a run with another thread count does; a solo run reuses a stacked member's artifact and vice versa.
    Equal requests are trained once. Each stack's members are registered as soon as the stack finishes
    (file, then row, as ensure_gems), so an interrupted call keeps the stacks it finished."""
    identities = [_gems_identity(r.env.config.name, r.logged, r.config, r.seed) for r in requests]
    keys = [json.dumps(identity, sort_keys=True) for identity in identities]
    artifacts: dict[str, Artifact] = {}
    missing: dict[str, int] = {}  # key → the first request that asks for it (its build lock is ours)
    elsewhere: dict[str, int] = {}  # key → request whose GeMS another worker is building
    holder = lock_holder()
    with ExitStack() as locks:
        for index, (request, identity, key) in enumerate(zip(requests, identities, keys)):
            if key in artifacts or key in missing or key in elsewhere:
                continue
            found = registry.find_artifact(GEMS_KIND, request.env.config.name, config=identity)
            lock = build_key(GEMS_KIND, request.env.config.name, identity)
            if found is None and try_lock(registry, lock, holder):
                locks.enter_context(holding(registry, lock, holder))
                found = registry.find_artifact(GEMS_KIND, request.env.config.name, config=identity)
                if found is None:
                    missing[key] = index
                    continue
            if found is not None:
                artifacts[key] = found
            else:
                elsewhere[key] = index
        _pretrain_stacks(registry, requests, identities, keys, list(missing.values()), artifacts, say)
    for key, index in elsewhere.items():  # wait for them (or build them, should their builder have died)
        request = requests[index]
        artifacts[key] = ensure_gems(registry, request.env, request.logged, request.config, request.seed, say=say)
    return [artifacts[key] for key in keys]


def _pretrain_stacks(registry: Registry, requests: list[GeMSRequest], identities: list[dict[str, Any]],
                     keys: list[str], todo: list[int], artifacts: dict[str, Artifact], say: Say) -> None:
    """Pretrain the GeMS of requests `todo` as stacked populations and register each (into `artifacts`)."""
    logs: dict[int, LoggedData] = {}  # by artifact id: seeds of one env share their logged data
    for i in todo:
        if requests[i].logged.id not in logs:
            logs[requests[i].logged.id] = load_logged_data(registry, requests[i].logged)
    data = {i: logs[requests[i].logged.id] for i in todo}
    members = [GeMSMember(data[i].slates, data[i].clicks, requests[i].config, requests[i].seed) for i in todo]
    for group in stack_groups(members):
        indices = [todo[g] for g in group]
        config = requests[indices[0]].config
        epochs = f"{config.max_epochs} epoch" + ("" if config.max_epochs == 1 else "s")
        seeds = set(requests[i].seed for i in indices)
        # a member's name in the progress lines: its env, and its seed where the seeds differ
        names = [requests[i].env.config.name + ("" if len(seeds) == 1 else f" (seed {requests[i].seed})")
                 for i in indices]
        seed_text = f", seed {seeds.pop()}" if len(seeds) == 1 else ""
        say(f"pretraining GeMS for {', '.join(names)} as one stack of {len(indices)} (latent dim {config.latent_dim}, "
            f"{epochs} over {_logged_slates(data[indices[0]], config):,} logged slates each{seed_text}); "
            "progress is reported every quarter epoch")
        reports = _GeMSProgress(config.max_epochs, say, label=f"GeMS stack of {len(indices)}")
        trained = train_stacked_gems([members[g] for g in group],
                                     progress_callback=lambda k, row: reports.epoch_done(row, label=f"GeMS {names[k]}"),
                                     batch_callback=reports.batch_done)
        for i, (model, metrics) in zip(indices, trained):
            request = requests[i]
            artifacts[keys[i]] = _register_gems(registry, request.env.config.name, request.logged, identities[i],
                                                data[i], model, metrics)


class _GeMSProgress:
    """Plain progress lines for a long pretraining (hours at the reference size on a CPU), with an ETA."""

    def __init__(self, epochs: int, say: Say, label: str = "GeMS"):
        self.epochs, self.say, self.label = epochs, say, label
        self.started = time.perf_counter()

    def batch_done(self, epoch: int, done: int, total: int) -> None:
        quarter = max(total // 4, 1)
        if done % quarter or done == total:
            return
        fraction = (epoch + done / total) / self.epochs
        elapsed = time.perf_counter() - self.started
        self.say(f"{self.label} epoch {epoch + 1}/{self.epochs}: {done:,}/{total:,} batches; "
                 f"{_duration(elapsed)} elapsed, about {_duration(elapsed / fraction - elapsed)} left")

    def epoch_done(self, row: dict[str, float], label: str | None = None) -> None:
        self.say(f"{label or self.label} epoch {int(row['epoch']) + 1}/{self.epochs} done: train loss {row['train_loss']:.4f}, "
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
    return built_once(registry, build_key(MF_KIND, env.config.name, identity),
                      lambda: registry.find_artifact(MF_KIND, env.config.name, config=identity),
                      lambda: _build_mf(registry, env, logged, config, seed, identity, say, device), say)


def _build_mf(registry: Registry, env: TopicRec, logged: Artifact, config: MFConfig, seed: int,
              identity: dict[str, Any], say: Say, device: str) -> Artifact:
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
