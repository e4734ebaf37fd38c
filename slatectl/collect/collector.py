"""Collect a D4RL-style dataset for (env, quality) from the checkpoint promoted for it.

The agent is rebuilt only from registered things: the checkpoint's file (SHA-256 checked, weights only)
and the pretrained inputs its run recorded (GeMS / MF artifacts by id). Users 0 … N−1 of the given seed,
simulated `batch_size` at a time. The behaviour policy is the agent's stochastic policy as trained
(`act="sample"`, the default, as D4RL's medium and expert datasets were collected with their SAC
policies' samples) or its deterministic evaluation policy (`act="greedy"`, whose return matches the
checkpoint's validation return within noise); the metadata records which.

Every dataset of an env has the same spaces (slatectl/collect/encoder.py): the env's own observation and
action are primary, continuous features come from the env's one encoder, and what belongs to the
collecting agent alone is under `agent/`. Arrays (T = N·H transitions, episode-major; dtypes in
docs/offline.md, the same in the npz, the Minari export and the gymnasium env):
  observations/slate, observations/clicks   (T, K)  the observation o_t the policy acted on
  observations/latent                       (T, d)  the encoder's features of o_t
  actions/slate (T, K), actions/latent (T, d)       the slate recommended; the encoder's action in [−1, 1]^d
  rewards (T,), terminals (T,), timeouts (T,)        clicks; episodes end only by the time limit H, so
                                                     timeouts = 1 on each episode's last step and
                                                     terminals = 0 everywhere (D4RL's convention)
  episode_returns (N,)
  final/slate, final/clicks (N, K), final/latent (N, d), final/user_state (N, D)
                                                     the observation after each episode's last step
  agent/belief (T, S), agent/latent (T, A)          the collecting agent's own belief and raw action
                                                     (absent for the random policy)
  infos/user_state (T, D), infos/bored (T, Topics)   hidden user state before / during step t
Without an encoder (`encoder="none"`) the `*/latent` arrays are absent.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from slatectl.registry import Dataset, Registry, resolve_random_return
from slatectl import __version__
from slatectl.agents import AGENTS, AgentInputs
from slatectl.agents.base import Agent
from slatectl.agents.stacked import StackedAgent
from slatectl.collect.minari_export import export_minari
from slatectl.collect.recorder import record_dataset
from slatectl.collect.npz import METADATA_KEY, write_npz
from slatectl.collect.random_return import compute_random_return
from slatectl.collect.encoder import NO_ENCODER, DatasetEncoder, encode_arrays, resolve_encoder
from slatectl.domain import RANDOM_POLICY, BehaviourMode, DatasetFormat, Quality
from slatectl.errors import BadInput, write_failed
from slatectl.sim.topicrec import TopicRec
from slatectl.train.assembly import build_agent, load_checkpoint_agent
from slatectl.train.config import resolve_run_config

#: Version of the dataset layout: 2 = env-primary spaces with one encoder per env (agent extras under agent/).
FORMAT_VERSION = 2
#: The discount every reference agent trains with (configs/agents/*.yaml; tested); returns, scores and
#: `episode_returns` are undiscounted click sums.
GAMMA = 0.8
#: The agents' act mode for each behaviour policy.
ACT_MODES = {BehaviourMode.SAMPLE: "explore", BehaviourMode.GREEDY: "greedy"}


@dataclass(frozen=True)
class CollectRequest:
    """One dataset to collect, its values already parsed where they entered (`slatectl collect`'s options,
    a sweep spec): the collector and the registry take them as they are and parse nothing again. A
    value of the wrong type is a programming error (TypeError), so a string never passes for an enum."""

    env: str  # a known env name (the caller resolved it: `slatectl.sim.config.select_envs`)
    quality: Quality
    episodes: int = 10_000
    seed: int = 0
    format: DatasetFormat = DatasetFormat.NPZ
    batch_size: int = 5000
    device: str = "cpu"  # a resolved device ("cpu", "cuda"): `slatectl.device.resolve_device` picks it
    act: BehaviourMode = BehaviourMode.SAMPLE
    encoder: int | str | None = None  # a GeMS artifact id, NO_ENCODER ("none"), or None for the env's default

    def __post_init__(self) -> None:
        for name, kind in (("quality", Quality), ("format", DatasetFormat), ("act", BehaviourMode)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"CollectRequest.{name} takes a {kind.__name__}, not {getattr(self, name)!r}; "
                                f"parse it where it enters (e.g. {kind.__name__}({str(getattr(self, name))!r})).")


def parse_encoder(text: str | None) -> int | str | None:
    """`--encoder`: a GeMS artifact id, NO_ENCODER, or None (the env's default); BadInput otherwise."""
    if text is None or text == NO_ENCODER:
        return text
    if not text.isdigit():
        raise BadInput(f"--encoder takes a GeMS artifact id or '{NO_ENCODER}', not {text!r}.")
    return int(text)


def stacked_form(agent_name: str, agent: Agent, device: str = "cpu") -> StackedAgent:
    """The agent as collection drives it: its stacked form with one member (`AgentSpec.population`), on
    `device`. The agent's layout (its weights) is what it is stacked from."""
    stacked = AGENTS[agent_name].population([agent.to(device)])
    stacked.eval()
    return stacked.to(device)


def agent_for_checkpoint(registry: Registry, checkpoint_id: int, device: str = "cpu") -> tuple[TopicRec, StackedAgent, dict]:
    """Rebuild the checkpoint's env and agent from registered artifacts only (hashes checked, weights only),
    on `device`; the agent in its stacked form (`stacked_form`)."""
    loaded = load_checkpoint_agent(registry, checkpoint_id)
    checkpoint = registry.get_checkpoint(checkpoint_id)
    run = registry.get_run(loaded.run_id)
    agent = stacked_form(loaded.config.agent_name, loaded.agent, device)
    return loaded.env.to(device), agent, {"run_id": run.id, "agent": loaded.config.agent_name, "config_hash": run.config_hash,
                                          "step": checkpoint.step, "val_return": checkpoint.val_return_mean}


def random_policy_agent(env_name: str, device: str = "cpu") -> tuple[TopicRec, StackedAgent]:
    """The uniform random policy, assembled like any agent (its slates depend on the user ids and seed)."""
    env, agent = build_agent(resolve_run_config(RANDOM_POLICY, env_name), AgentInputs())
    return env.to(device), stacked_form(RANDOM_POLICY, agent, device)


@dataclass
class _Simulated:
    """A request's recorded arrays (metadata included), waiting to be written and registered."""

    request: CollectRequest
    env: TopicRec
    arrays: dict[str, np.ndarray]
    metadata: dict
    checkpoint: object
    promotion: object


def collect_dataset(registry: Registry, request: CollectRequest,
                    on_batch: Callable[[int, float], None] | None = None) -> Dataset:
    """One dataset: simulate, write the file, register it (the row last)."""
    (dataset,) = collect_datasets(registry, [request], lambda _: on_batch)
    return dataset


def collect_datasets(registry: Registry, requests: list[CollectRequest],
                     on_batch_for: Callable[[CollectRequest], Callable[[int, float], None] | None] | None = None,
                     ) -> Iterator[Dataset]:
    """The requests' datasets, in order, each registered before the next is yielded.

    An npz file is written by a background thread while the next request simulates, so the device (or
    the CPU's torch threads) does not wait on the disk between environments; each file is complete
    before its registry row is written, as for a single dataset. This keeps at most two datasets'
    arrays in memory. Minari exports are written in the foreground.
    """
    pending: tuple[_Simulated, tempfile.TemporaryDirectory, Future | None] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="npz-writer") as writer:
        try:
            for request in requests:
                simulated = _simulate(registry, request, on_batch_for(request) if on_batch_for else None)
                if pending is not None:
                    done, pending = pending, None
                    yield _register(registry, *done)
                scratch = new_scratch(registry)
                written = (writer.submit(write_npz, Path(scratch.name) / "dataset.npz", simulated.arrays)
                           if request.format == DatasetFormat.NPZ else None)
                pending = (simulated, scratch, written)
            if pending is not None:
                done, pending = pending, None
                yield _register(registry, *done)
        finally:
            if pending is not None:  # stopped early: let the write finish, then drop its file
                if pending[2] is not None:
                    pending[2].exception()
                pending[1].cleanup()


def _simulate(registry: Registry, request: CollectRequest, on_batch) -> _Simulated:
    promotion = checkpoint = None
    lineage: dict = {}
    run_inputs: list[int] = []
    if request.quality == Quality.RANDOM:
        env, agent = random_policy_agent(request.env, request.device)
    else:
        promotion, checkpoint = registry.promoted_checkpoint(request.env, request.quality)
        run_inputs = list(registry.get_run(checkpoint.run_id).inputs)
    encoder = resolve_encoder(registry, request.env, request.encoder, run_inputs)  # before the long part
    if checkpoint is not None:
        env, agent, lineage = agent_for_checkpoint(registry, checkpoint.id, request.device)
    ref_min, ref_max, ref_max_source = reference_scores(registry, request.env, checkpoint, request.quality)

    recorded = record_dataset(env, agent, request.episodes, request.seed, request.batch_size, on_batch,
                              mode=ACT_MODES[request.act])
    arrays = _with_episode_ends({name: a for name, a in recorded.items() if not (name.startswith("agent/") and a.shape[-1] == 0)},
                                request.episodes, env.config.episode_length)
    arrays.update(encode_arrays(arrays, encoder))
    metadata = {"format_version": FORMAT_VERSION, "env": request.env, "quality": request.quality, "seed": request.seed,
                "episodes": request.episodes, "slatectl_version": __version__,
                "checkpoint_id": checkpoint.id if checkpoint else None,
                "promotion_id": promotion.id if promotion else None,
                "policy": RANDOM_POLICY if checkpoint is None else lineage["agent"], **lineage,
                "behaviour": str(request.act) if checkpoint is not None else "uniform random",
                **spaces_metadata(env.config, encoder),
                "ref_min_score": ref_min, "ref_max_score": ref_max, "ref_max_source": ref_max_source}
    arrays[METADATA_KEY] = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    return _Simulated(request, env, arrays, metadata, checkpoint, promotion)


def spaces_metadata(env_config, encoder: DatasetEncoder | None) -> dict:
    """What a learner needs to know besides the arrays: horizon, discount, the encoder and the spaces."""
    K, N = env_config.slate_size, env_config.num_items
    latent = {"observation_latent_dim": encoder.latent_dim, "action_low": -1.0, "action_high": 1.0} if encoder else {}
    return {"horizon": env_config.episode_length, "gamma": GAMMA, "slate_size": K, "num_items": N,
            "encoder": encoder.describe() if encoder else None, **latent}


def _register(registry: Registry, simulated: _Simulated, scratch: tempfile.TemporaryDirectory,
              written: Future | None) -> Dataset:
    """Wait for the file (npz) or export it (Minari), then write the registry row: the commit point."""
    request, arrays, metadata = simulated.request, simulated.arrays, simulated.metadata
    checkpoint, promotion = simulated.checkpoint, simulated.promotion
    returns = arrays["episode_returns"]
    with scratch:
        if request.format == DatasetFormat.MINARI:
            export = _export_minari(registry, request, simulated.env, arrays, metadata, checkpoint, Path(scratch.name))
            metadata["minari"] = {"dataset_id": export.dataset_id, "path": str(export.path),
                                  "ref_min_score": export.ref_min_score, "ref_max_score": export.ref_max_score}
            path = export.path / "data" / "main_data.hdf5"
        else:
            assert written is not None
            path = Path(scratch.name) / "dataset.npz"
            try:
                written.result()  # re-raises a failed write here
            except OSError as exc:  # disk full, file-size limit: the scratch folder goes with the `with`
                raise write_failed(path, exc) from exc
        try:
            return registry.register_dataset(
                request.env, request.quality, path, episodes=request.episodes, transitions=int(arrays["rewards"].shape[0]),
                return_mean=float(returns.mean()), return_std=float(returns.std(ddof=1)) if returns.size > 1 else 0.0,
                format=request.format, seed=request.seed, checkpoint_id=checkpoint.id if checkpoint else None,
                promotion_id=promotion.id if promotion else None, policy=RANDOM_POLICY if checkpoint is None else None,
                metadata=metadata)
        except BaseException:
            if request.format == DatasetFormat.MINARI:  # the registry row is the commit point: no row, no export
                shutil.rmtree(export.path, ignore_errors=True)
            raise


def reference_scores(registry: Registry, env: str, checkpoint=None, quality: Quality | None = None) -> tuple[float, float | None, str]:
    """(ref_min, ref_max, where ref_max came from) for D4RL's normalised score
    100 · (R − ref_min) / (ref_max − ref_min): ref_min is the random policy's return, ref_max the expert
    checkpoint's return (its test return when it has one, else its validation return). With no expert
    promoted, ref_max is the best trained checkpoint of the env (by the same return), and the source
    says so; with no trained checkpoint at all it is None and the source says why."""
    ref_min = resolve_random_return(registry, env, compute_random_return).value
    if quality == Quality.EXPERT and checkpoint is not None:
        return ref_min, _checkpoint_return(checkpoint), f"the expert checkpoint {checkpoint.id} (this dataset's)"
    promotion = registry.active_promotion(env, Quality.EXPERT)
    if promotion is not None:
        expert = registry.get_checkpoint(promotion.checkpoint_id)
        return ref_min, _checkpoint_return(expert), f"the expert checkpoint {expert.id} promoted for {env}"
    trained = [c for c in registry.list_checkpoints(env=env) if c.trained is not False]
    if not trained:
        return ref_min, None, f"no expert is promoted and no trained checkpoint exists for {env}"
    best = max(trained, key=_checkpoint_return)
    return ref_min, _checkpoint_return(best), (f"no expert is promoted for {env}: the best trained checkpoint "
                                               f"{best.id} ({best.agent}, step {best.step})")


def _checkpoint_return(checkpoint) -> float:
    return checkpoint.test_return_mean if checkpoint.test_return_mean is not None else checkpoint.val_return_mean


def _export_minari(registry, request, env, arrays, metadata, checkpoint, scratch: Path):
    source = (f"checkpoint {checkpoint.id} (run {metadata.get('run_id')}, {metadata.get('agent')}, step {checkpoint.step}, "
              f"{metadata['behaviour']} policy)" if checkpoint is not None else "the uniform random slate policy")
    scores = (f" Normalised scores: ref_min_score is the random policy's return, ref_max_score that of "
              f"{metadata['ref_max_source']}." if metadata["ref_max_score"] is not None
              else f" No normalised scores: {metadata['ref_max_source']}.")
    return export_minari(
        arrays, env_cfg=env.config, quality=request.quality, episodes=request.episodes, seed=request.seed,
        scratch=scratch, algorithm=metadata.get("agent") or RANDOM_POLICY, encoder=metadata["encoder"],
        description=(f"slatectl {request.quality} dataset for TopicRec {request.env}: {request.episodes} episodes "
                     f"of {source}, users 0..{request.episodes - 1} of seed {request.seed}.{scores}"),
        ref_min_score=metadata["ref_min_score"], ref_max_score=metadata["ref_max_score"],
        registry_home=registry.home, registry_url=registry.url)


def new_scratch(registry: Registry) -> tempfile.TemporaryDirectory:
    """A temporary folder under `scratch_dir`; a home the system will not write is one write-failure message."""
    folder = scratch_dir(registry)
    try:
        return tempfile.TemporaryDirectory(dir=folder)
    except OSError as exc:  # a read-only or full home
        raise write_failed(folder, exc) from exc


def scratch_dir(registry: Registry) -> str:
    """A scratch folder beside (not inside) the artifact store, so `registry verify` never sees it.

    Absolute, resolved here once: Minari joins the datasets folder it is given with paths it derives from
    it, so a relative home (the default `.slatectl`) would otherwise be joined twice.
    """
    scratch = Path(registry.store.root).resolve().parent / "scratch"
    try:
        scratch.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(scratch, exc) from exc
    return str(scratch)


def _with_episode_ends(arrays: dict[str, np.ndarray], episodes: int, horizon: int) -> dict[str, np.ndarray]:
    """Add terminals, timeouts and episode returns to the recorded arrays."""
    # The time limit is the only episode end: a timeout (the state is not terminal), never a terminal.
    timeouts = np.zeros((episodes, horizon), dtype=np.bool_)
    timeouts[:, -1] = True
    rewards = torch.from_numpy(arrays["rewards"]).view(episodes, horizon)
    return {**arrays, "terminals": np.zeros(episodes * horizon, dtype=np.bool_), "timeouts": timeouts.reshape(-1),
            "episode_returns": rewards.sum(dim=1).double().numpy()}
