"""The pretrained inputs an agent needs (logged data → GeMS / MF), found in the registry or built once: each
is an artifact keyed by its config (env, parameters, seed), built under the registry's build lock on that
key (`build_once.py`), so of several processes (or machines) that need it, one builds and the others wait.
Lineage: logged data ← env; GeMS and MF ← logged data.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from slatectl.registry import Artifact, Registry
from slatectl.settings import lease_seconds
from slatectl.train.build_once import build_key, built_once, holding, lock_holder
from slatectl.train.progress import format_duration
from slatectl.pretrain.gems import GeMS
from slatectl.pretrain.gems_train import GeMSConfig, GeMSMember, build_gems, stack_groups, train_stacked_gems
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


def _ensure(registry: Registry, kind: str, env_name: str, identity: dict[str, Any], build: Callable[[], Artifact],
            say: Say) -> Artifact:
    """The artifact of `kind` registered under `identity`, or the one `build()` registers (once across workers)."""
    return built_once(registry, build_key(kind, env_name, identity),
                      lambda: registry.find_artifact(kind, env_name, config=identity), build, say)


def ensure_logged_data(registry: Registry, env: TopicRec, config: LoggedDataConfig, say: Say = print,
                       on_batch: Callable[[int], None] | None = None) -> Artifact:
    name = env.config.name
    identity = {"env": name, "env_config": env.config.to_dict(), "item_table_sha256": env_table_sha256(env),
                "logged": asdict(config)}

    def build() -> Artifact:
        say(f"building logged data for {name}: {config.episodes:,} episodes of the ε-greedy oracle "
            f"(ε = {config.epsilon})")
        data = generate_logged_data(env, config, on_batch=on_batch)
        returns = data.episode_returns
        return registry.register_artifact(LOGGED_KIND, name, data.state_dict(), config=identity, metrics={
            "episodes": config.episodes, "mean_return": float(returns.mean()), "std_return": float(returns.std())})

    return _ensure(registry, LOGGED_KIND, name, identity, build, say)


def load_logged_data(registry: Registry, artifact: Artifact) -> LoggedData:
    return LoggedData(**registry.load_artifact_state(artifact.id))  # its `state_dict()`


@dataclass(frozen=True)
class GeMSRequest:
    """One GeMS that `ensure_gems_population` finds or pretrains: as ensure_gems's arguments."""

    env: TopicRec
    logged: Artifact
    config: GeMSConfig
    seed: int

    def identity(self) -> dict[str, Any]:
        """The artifact's cache key, the same for a solo and a stacked pretraining (see ensure_gems_population)."""
        return {"env": self.env.config.name, "logged_artifact": self.logged.id, "gems": asdict(self.config),
                "seed": self.seed}

    def member(self, data: LoggedData) -> GeMSMember:
        return GeMSMember(data.slates, data.clicks, self.config, self.seed)


def ensure_gems(registry: Registry, env: TopicRec, logged: Artifact, config: GeMSConfig, seed: int,
                say: Say = print) -> Artifact:
    request = GeMSRequest(env, logged, config, seed)
    return _ensure(registry, GEMS_KIND, env.config.name, request.identity(), lambda: _pretrain_stack(
        registry, [request], [request.member(load_logged_data(registry, logged))], say)[0], say)


def ensure_gems_population(registry: Registry, requests: list[GeMSRequest], say: Say = print) -> list[Artifact]:
    """One GeMS artifact per request (in order): found in the registry, or pretrained together with the
    other missing ones as stacks and registered; equal requests are trained once. The cache key is
    ensure_gems's: a stacked member is the solo algorithm computed with batched kernels, so it differs from
    the solo result only by float rounding, as a run with another thread count does. Each stack's members
    are registered (file, then row) as soon as it finishes, so an interrupted call keeps the stacks it finished."""
    keys = [build_key(GEMS_KIND, r.env.config.name, r.identity()) for r in requests]  # each its build lock's key
    artifacts: dict[str, Artifact] = {}
    missing: dict[str, GeMSRequest] = {}  # whose build lock is ours
    elsewhere: dict[str, GeMSRequest] = {}  # whose GeMS another worker is building
    holder, lease_s = lock_holder(), lease_seconds()
    with ExitStack() as locks:
        for key, request in dict(zip(keys, requests)).items():
            found = registry.find_artifact(GEMS_KIND, request.env.config.name, config=request.identity())
            if found is None and registry.acquire_build_lock(key, holder, lease_s):
                locks.enter_context(holding(registry, key, holder, lease_s))
                found = registry.find_artifact(GEMS_KIND, request.env.config.name, config=request.identity())
                if found is None:
                    missing[key] = request
                    continue
            if found is not None:
                artifacts[key] = found
            else:
                elsewhere[key] = request
        todo, todo_keys = list(missing.values()), list(missing)
        logged = {r.logged.id: r.logged for r in todo}  # seeds of one env share their logged data: loaded once
        logs = {artifact_id: load_logged_data(registry, artifact) for artifact_id, artifact in logged.items()}
        members = [request.member(logs[request.logged.id]) for request in todo]
        for group in stack_groups(members):
            trained = _pretrain_stack(registry, [todo[g] for g in group], [members[g] for g in group], say)
            artifacts.update(zip([todo_keys[g] for g in group], trained))
    for key, request in elsewhere.items():  # wait for them (or build them, should their builder have died)
        artifacts[key] = ensure_gems(registry, request.env, request.logged, request.config, request.seed, say=say)
    return [artifacts[key] for key in keys]


def _pretrain_stack(registry: Registry, requests: list[GeMSRequest], members: list[GeMSMember],
                    say: Say) -> list[Artifact]:
    """Pretrain the requests' GeMS as one stack (one member: a solo run) and register each with its action
    bounds (from the first BOUNDS_EPISODES logged episodes): the file written completely, then the row."""
    config, several = requests[0].config, len(requests) > 1
    seeds = {r.seed for r in requests}
    # a member's name in the progress lines: its env, and its seed where the seeds differ
    names = [r.env.config.name + ("" if len(seeds) == 1 else f" (seed {r.seed})") for r in requests]
    stack = f" as one stack of {len(requests)}" if several else ""
    epochs = f"{config.max_epochs} epoch" + ("" if config.max_epochs == 1 else "s")
    slates = len(members[0].slates.reshape(-1, members[0].slates.shape[-1])[:config.max_slates])
    say(f"pretraining GeMS for {', '.join(names)}{stack} (latent dim {config.latent_dim}, {epochs} over {slates:,} "
        f"logged slates{' each' if several else ''}{f', seed {seeds.pop()}' if len(seeds) == 1 else ''}); "
        "progress is reported every quarter epoch")
    reports = _GeMSProgress(config.max_epochs, say, f"GeMS stack of {len(requests)}" if several else "GeMS")
    labels = [f"GeMS {name}" if several else "GeMS" for name in names]
    trained = train_stacked_gems(members, progress_callback=lambda k, row: reports.epoch_done(row, labels[k]),
                                 batch_callback=reports.batch_done)
    artifacts = []
    for request, member, (model, metrics) in zip(requests, members, trained):
        center, scale = model.action_bounds(member.slates[:BOUNDS_EPISODES].long().flatten(0, 1),
                                            member.clicks[:BOUNDS_EPISODES].float().flatten(0, 1))
        state = {"model": model.state_dict(), "action_center": center, "action_scale": scale}
        artifacts.append(registry.register_artifact(GEMS_KIND, request.env.config.name, state,
                                                    config=request.identity(), metrics=metrics,
                                                    parents=[request.logged.id]))
    return artifacts


class _GeMSProgress:
    """Plain progress lines for a long pretraining (hours at the reference size on a CPU), with an ETA."""

    def __init__(self, epochs: int, say: Say, label: str):
        self.epochs, self.say, self.label = epochs, say, label
        self.started = time.perf_counter()

    def batch_done(self, epoch: int, done: int, total: int) -> None:
        quarter = max(total // 4, 1)
        if done % quarter or done == total:
            return
        fraction = (epoch + done / total) / self.epochs
        elapsed = time.perf_counter() - self.started
        self.say(f"{self.label} epoch {epoch + 1}/{self.epochs}: {done:,}/{total:,} batches; "
                 f"{format_duration(elapsed)} elapsed, about {format_duration(elapsed / fraction - elapsed)} left")

    def epoch_done(self, row: dict[str, float], label: str) -> None:
        elapsed = format_duration(time.perf_counter() - self.started)
        self.say(f"{label} epoch {int(row['epoch']) + 1}/{self.epochs} done: train loss {row['train_loss']:.4f}, "
                 f"validation loss {row['val_loss']:.4f} ({elapsed} elapsed)")


def load_gems(registry: Registry, artifact: Artifact) -> tuple[GeMS, tuple[torch.Tensor, torch.Tensor]]:
    state = registry.load_artifact_state(artifact.id)
    model = build_gems(GeMSConfig(**artifact.config["gems"]))
    model.load_state_dict(state["model"])
    model.eval().requires_grad_(False)
    return model, (state["action_center"], state["action_scale"])


def ensure_mf(registry: Registry, env: TopicRec, logged: Artifact, config: MFConfig, seed: int, say: Say = print,
              device: str = "cpu") -> Artifact:
    identity = {"env": env.config.name, "logged_artifact": logged.id, "mf": asdict(config), "seed": seed}

    def build() -> Artifact:
        say(f"pretraining MF item embeddings for {env.config.name} (BPR, seed {seed})")
        data = load_logged_data(registry, logged)
        table, metrics = train_mf(data.slates.long(), data.clicks.float(), config, seed, device=device)
        return registry.register_artifact(MF_KIND, env.config.name, {"item_embeddings": table}, config=identity,
                                          metrics=metrics, parents=[logged.id])

    return _ensure(registry, MF_KIND, env.config.name, identity, build, say)
