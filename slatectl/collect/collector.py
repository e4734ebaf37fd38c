"""Collect a D4RL-style dataset for (env, quality) from the checkpoint promoted for it.

The agent is rebuilt only from registered things: the checkpoint's file (SHA-256 checked, weights only)
and the pretrained inputs its run recorded (GeMS / MF artifacts by id). Users 0 … N−1 of the given seed,
simulated `batch_size` at a time with the greedy (evaluation) policy, so a dataset's return matches the
checkpoint's validation return within noise, and the same seed gives the same file.

Device: the simulator and the agent run on `device` (CPU or CUDA, one code path: see
`slatectl.collect.recorder`, which also says how the data reaches the host); the same seed gives the same
file on the CPU whatever the batch size.

Arrays (T = N·H transitions, episode-major):
  observations/slate, observations/clicks   (T, K)  the observation o_t the agent acted on
  observations/belief                       (T, S)  the agent's belief state at t (zeros for `random`)
  actions/slate (T, K), actions/latent (T, A)        the slate recommended; the raw (latent) action
  rewards (T,), terminals (T,), timeouts (T,)        clicks; episodes end only by the time limit H, so
                                                     timeouts = 1 on each episode's last step and
                                                     terminals = 0 everywhere (D4RL's convention)
  episode_returns (N,)
  final/clicks (N, K), final/user_state (N, D)       the observation after each episode's last step
  infos/user_state (T, D), infos/bored (T, Topics)   hidden user state before / during step t
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
from slatectl.agents import AgentInputs
from slatectl.agents.base import Agent
from slatectl.collect.minari_export import export_minari
from slatectl.collect.recorder import record_dataset
from slatectl.collect.npz import METADATA_KEY, write_npz
from slatectl.collect.random_return import compute_random_return
from slatectl.domain import DatasetFormat, Quality
from slatectl.errors import BadInput, write_failed
from slatectl.sim.topicrec import TopicRec
from slatectl.train.assembly import build_agent, load_checkpoint_agent
from slatectl.train.config import resolve_run_config

RANDOM_POLICY = "random"  # the agent that collects the `random` quality


@dataclass(frozen=True)
class CollectRequest:
    env: str
    quality: Quality
    episodes: int = 10_000
    seed: int = 0
    format: DatasetFormat = DatasetFormat.NPZ
    batch_size: int = 5000
    device: str = "cpu"  # a resolved device ("cpu", "cuda"): `slatectl.device.resolve_device` picks it

    def validate(self) -> None:
        if self.quality not in set(Quality):
            raise BadInput(f"unknown quality {self.quality!r}; choose one of {', '.join(Quality)}.")
        if self.episodes < 1 or self.batch_size < 1:
            raise BadInput("--episodes and the batch size must be >= 1.")
        if self.format not in set(DatasetFormat):
            raise BadInput(f"unknown format {self.format!r}; choose one of {', '.join(DatasetFormat)}.")


def agent_for_checkpoint(registry: Registry, checkpoint_id: int, device: str = "cpu") -> tuple[TopicRec, Agent, dict]:
    """Rebuild the checkpoint's env and agent from registered artifacts only (hashes checked, weights only),
    then move both to `device`."""
    loaded = load_checkpoint_agent(registry, checkpoint_id)
    checkpoint = registry.get_checkpoint(checkpoint_id)
    run = registry.get_run(loaded.run_id)
    return loaded.env.to(device), loaded.agent.to(device), {"run_id": run.id, "agent": loaded.config.agent_name, "config_hash": run.config_hash,
                                      "step": checkpoint.step, "val_return": checkpoint.val_return_mean}


def random_policy_agent(env_name: str, device: str = "cpu") -> tuple[TopicRec, Agent]:
    """The uniform random policy, assembled like any agent (its slates depend on the user ids and seed)."""
    env, agent = build_agent(resolve_run_config(RANDOM_POLICY, env_name), AgentInputs())
    agent.eval()
    return env.to(device), agent.to(device)


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
    arrays in memory. Minari exports are written in the foreground. All requests are validated first.
    """
    for request in requests:
        request.validate()
    pending: tuple[_Simulated, tempfile.TemporaryDirectory, Future | None] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="npz-writer") as writer:
        try:
            for request in requests:
                simulated = _simulate(registry, request, on_batch_for(request) if on_batch_for else None)
                if pending is not None:
                    done, pending = pending, None
                    yield _register(registry, *done)
                scratch = _new_scratch(registry)
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
    if request.quality == "random":
        env, agent = random_policy_agent(request.env, request.device)
    else:
        promotion, checkpoint = registry.promoted_checkpoint(request.env, request.quality)
        env, agent, lineage = agent_for_checkpoint(registry, checkpoint.id, request.device)

    arrays = _with_episode_ends(record_dataset(env, agent, request.episodes, request.seed, request.batch_size, on_batch),
                                request.episodes, env.config.episode_length)
    metadata = {"env": request.env, "quality": request.quality, "seed": request.seed, "episodes": request.episodes,
                "slatectl_version": __version__, "checkpoint_id": checkpoint.id if checkpoint else None,
                "promotion_id": promotion.id if promotion else None, "policy": "random" if checkpoint is None else None,
                **lineage}
    arrays[METADATA_KEY] = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    return _Simulated(request, env, arrays, metadata, checkpoint, promotion)


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
                promotion_id=promotion.id if promotion else None, policy="random" if checkpoint is None else None,
                metadata=metadata)
        except BaseException:
            if request.format == DatasetFormat.MINARI:  # the registry row is the commit point: no row, no export
                shutil.rmtree(export.path, ignore_errors=True)
            raise


def reference_scores(registry: Registry, env: str, checkpoint=None, quality: str = "") -> tuple[float | None, float | None]:
    """(ref_min, ref_max) for score normalisation: the random policy's return and the expert checkpoint's
    (its test return when it has one, else its validation return); (None, None) with no expert promoted."""
    if quality == "expert" and checkpoint is not None:
        expert = checkpoint
    else:
        try:
            _, expert = registry.promoted_checkpoint(env, "expert")
        except BadInput:
            return None, None
    ref_max = expert.test_return_mean if expert.test_return_mean is not None else expert.val_return_mean
    return resolve_random_return(registry, env, compute_random_return).value, ref_max


def _export_minari(registry, request, env, arrays, metadata, checkpoint, scratch: Path):
    ref_min, ref_max = reference_scores(registry, request.env, checkpoint, request.quality)
    source = (f"checkpoint {checkpoint.id} (run {metadata.get('run_id')}, {metadata.get('agent')}, step {checkpoint.step})"
              if checkpoint is not None else "the uniform random slate policy")
    return export_minari(
        arrays, env_cfg=env.config, quality=request.quality, episodes=request.episodes, seed=request.seed,
        scratch=scratch, algorithm=metadata.get("agent") or "random",
        description=(f"slatectl {request.quality} dataset for TopicRec {request.env}: {request.episodes} episodes "
                     f"of {source}, users 0..{request.episodes - 1} of seed {request.seed}."),
        ref_min_score=ref_min, ref_max_score=ref_max)


def _new_scratch(registry: Registry) -> tempfile.TemporaryDirectory:
    folder = _scratch_dir(registry)
    try:
        return tempfile.TemporaryDirectory(dir=folder)
    except OSError as exc:  # a read-only or full home
        raise write_failed(folder, exc) from exc


def _scratch_dir(registry: Registry) -> str:
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
    timeouts = np.zeros((episodes, horizon), dtype=np.uint8)
    timeouts[:, -1] = 1
    rewards = torch.from_numpy(arrays["rewards"]).view(episodes, horizon)
    return {**arrays, "terminals": np.zeros(episodes * horizon, dtype=np.uint8), "timeouts": timeouts.reshape(-1),
            "episode_returns": rewards.sum(dim=1).double().numpy()}
