"""`Registry`: the one object the rest of slatectl uses to record and find runs, checkpoints, artifacts,
promotions and datasets.

It is a facade: each entity has its own repository class (runs, checkpoints, artifacts, promotions,
datasets, verification, housekeeping, overview), all sharing one `Database` (engine, store,
transactions). The repositories never call each other's private methods; the few that need another
entity's operations receive that repository explicitly. Every public method here delegates to exactly
one repository, so this class is the registry's whole interface in one place.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from slatectl.domain import DatasetFormat, Quality
from slatectl.errors import BadInput
from slatectl.registry.artifacts import ArtifactRepository, Payload
from slatectl.registry.build_locks import BuildLockRepository
from slatectl.registry.checkpoints import CheckpointRepository
from slatectl.registry.database import Database
from slatectl.registry.datasets import DatasetRepository, LineageNode
from slatectl.registry.housekeeping import GcReport, Housekeeping
from slatectl.registry.lease import DEFAULT_STALE_AFTER_S, run_liveness
from slatectl.registry.lookups import check_quality
from slatectl.registry.models import (Artifact, Checkpoint, Dataset, Promotion, Run, RunStatus, Sweep, SweepTask,
                                     Validation)
from slatectl.registry.overview import Overview, OverviewQueries
from slatectl.registry.promotions import PromotionRepository
from slatectl.registry.runs import RunRepository
from slatectl.registry.sweeps import SweepRepository
from slatectl.registry.suggest import RandomReturnFn, Suggestion, resolve_random_return, suggest_from
from slatectl.registry.verify import Verifier, VerifyReport
from slatectl.settings import Settings
from slatectl.storage import ArtifactStore
from slatectl.storage.scratch import SCRATCH_GRACE_S


class Registry:
    """Open with `open_registry(settings)`; use as a context manager or call `close()`."""

    def __init__(self, url: str, store: ArtifactStore, busy_timeout_s: float = 30.0,
                 home: Path | str | None = None) -> None:
        self.db = Database(url, store, busy_timeout_s, home)
        self.runs = RunRepository(self.db)
        self.checkpoints = CheckpointRepository(self.db)
        self.artifacts = ArtifactRepository(self.db)
        self.promotions = PromotionRepository(self.db)
        self.datasets = DatasetRepository(self.db)
        self.verifier = Verifier(self.db)
        self.housekeeping = Housekeeping(self.db, self.artifacts)
        self.queries = OverviewQueries(self.db)
        self.sweeps = SweepRepository(self.db)
        self.build_locks = BuildLockRepository(self.db)

    # -- the handle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def store(self) -> ArtifactStore:
        return self.db.store

    @property
    def engine(self):
        return self.db.engine

    @property
    def schema_version(self) -> int:
        return self.db.schema_version

    @property
    def home(self) -> Path:
        return self.db.home

    @property
    def scratch_dir(self) -> Path:
        """Where `collect` keeps its temp folders (cleaned by `registry gc` when a collection was killed)."""
        return self.housekeeping.scratch_dir

    @property
    def trash_dir(self) -> Path:
        return self.verifier.trash_dir

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- runs and their lease -------------------------------------------------------------------------------

    def start_run(self, agent: str, env: str, seed: int, config: Mapping[str, Any], *, command: str | None = None,
                  code_version: str | None = None, inputs: Sequence[int] = (), group_id: str | None = None) -> Run:
        return self.runs.start_run(agent, env, seed, config, command=command, code_version=code_version,
                                   inputs=inputs, group_id=group_id)

    def claim_run(self, run_id: int, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.runs.claim_run(run_id, stale_after_s=stale_after_s)

    def release_run(self, previous: Run) -> None:
        self.runs.release_run(previous)

    def heartbeat(self, run_id: int) -> None:
        self.runs.heartbeat(run_id)

    def finish_run(self, run_id: int, status: str = RunStatus.FINISHED, error: str | None = None) -> Run:
        return self.runs.finish_run(run_id, status, error)

    @staticmethod
    def run_liveness(run: Run, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> str:
        return run_liveness(run, stale_after_s)

    def get_run(self, run_id: int) -> Run:
        return self.runs.get_run(run_id)

    def list_runs(self, env: str | None = None, agent: str | None = None, status: str | None = None,
                  limit: int | None = None, group_id: str | None = None) -> list[Run]:
        return self.runs.list_runs(env, agent, status, limit, group_id)

    def run_disk_usage(self, run_id: int) -> int:
        return self.runs.run_disk_usage(run_id)

    def record_validation(self, run_id: int, step: int, return_mean: float, return_std: float,
                          episodes: int) -> Validation:
        return self.runs.record_validation(run_id, step, return_mean, return_std, episodes)

    def validations(self, run_id: int) -> list[Validation]:
        return self.runs.validations(run_id)

    # -- checkpoints ------------------------------------------------------------------------------------------

    def register_checkpoint(self, run_id: int, step: int, state_dict: Mapping[str, Any], *, val_return_mean: float,
                            val_return_std: float, val_episodes: int, episodes: int | None = None,
                            env_steps: int | None = None, trained: bool | None = None,
                            existing_ok: bool = False) -> Checkpoint:
        return self.checkpoints.register_checkpoint(
            run_id, step, state_dict, val_return_mean=val_return_mean, val_return_std=val_return_std,
            val_episodes=val_episodes, episodes=episodes, env_steps=env_steps, trained=trained,
            existing_ok=existing_ok)

    def record_test_return(self, checkpoint_id: int, mean: float, std: float, episodes: int) -> Checkpoint:
        return self.checkpoints.record_test_return(checkpoint_id, mean, std, episodes)

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint:
        return self.checkpoints.get_checkpoint(checkpoint_id)

    def list_checkpoints(self, env: str | None = None, agent: str | None = None, run_id: int | None = None,
                         quality: str | None = None) -> list[Checkpoint]:
        return self.checkpoints.list_checkpoints(env, agent, run_id, quality)

    def checkpoint_envs(self) -> list[str]:
        return self.checkpoints.checkpoint_envs()

    def load_checkpoint_state(self, checkpoint_id: int, map_location: str = "cpu") -> dict[str, Any]:
        return self.checkpoints.load_checkpoint_state(checkpoint_id, map_location)

    def checkpoint_path(self, checkpoint_id: int) -> Path:
        return self.checkpoints.checkpoint_path(checkpoint_id)

    # -- artifacts --------------------------------------------------------------------------------------------

    def register_artifact(self, kind: str, env: str | None, payload: Payload, *,
                          config: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                          parents: Sequence[int] = (), run_id: int | None = None,
                          suffix: str | None = None) -> Artifact:
        return self.artifacts.register_artifact(kind, env, payload, config=config, metrics=metrics, parents=parents,
                                                run_id=run_id, suffix=suffix)

    def get_artifact(self, artifact_id: int) -> Artifact:
        return self.artifacts.get_artifact(artifact_id)

    def find_artifact(self, kind: str, env: str | None = None, config_hash: str | None = None,
                      config: Mapping[str, Any] | None = None) -> Artifact | None:
        return self.artifacts.find_artifact(kind, env, config_hash, config)

    def list_artifacts(self, kind: str | None = None, env: str | None = None, *,
                       include_pruned: bool = False) -> list[Artifact]:
        return self.artifacts.list_artifacts(kind, env, include_pruned=include_pruned)

    def artifact_path(self, artifact_id: int) -> Path:
        return self.artifacts.artifact_path(artifact_id)

    def read_artifact_bytes(self, artifact_id: int) -> bytes:
        return self.artifacts.read_artifact_bytes(artifact_id)

    def load_artifact_state(self, artifact_id: int, map_location: str = "cpu") -> dict[str, Any]:
        return self.artifacts.load_artifact_state(artifact_id, map_location)

    def record_policy_return(self, env: str, policy: str, mean: float, std: float | None = None,
                             episodes: int | None = None, seed: int | None = None) -> Artifact:
        return self.artifacts.record_policy_return(env, policy, mean, std, episodes, seed)

    def policy_return(self, env: str, policy: str) -> tuple[float, Artifact] | None:
        return self.artifacts.policy_return(env, policy)

    def resume_states(self, run_id: int) -> list[Artifact]:
        return self.artifacts.resume_states(run_id)

    def prune_resume_states(self, run_id: int, keep: int = 1) -> list[Artifact]:
        return self.artifacts.prune_resume_states(run_id, keep)

    # -- promotions -------------------------------------------------------------------------------------------

    def promote_checkpoint(self, env: str | None, quality: Quality | str, checkpoint_id: int, note: str | None = None,
                           promoted_by: str | None = None, allow_same: bool = False) -> Promotion:
        return self.promotions.promote_checkpoint(env, quality, checkpoint_id, note, promoted_by, allow_same)

    def active_promotion(self, env: str, quality: Quality | str) -> Promotion | None:
        return self.promotions.active_promotion(env, quality)

    def promoted_checkpoint(self, env: str, quality: Quality | str) -> tuple[Promotion, Checkpoint]:
        return self.promotions.promoted_checkpoint(env, quality)

    def promotion_history(self, env: str | None = None, quality: str | None = None) -> list[Promotion]:
        return self.promotions.promotion_history(env, quality)

    def active_promotions(self) -> list[Promotion]:
        return self.promotions.active_promotions()

    # -- suggestions (reads checkpoints and the random-policy return; writes nothing unless asked) ------------

    def suggestion_candidates(self, env: str, agent: str | None = None, run_id: int | None = None) -> list[Checkpoint]:
        candidates = self.list_checkpoints(env=env, agent=agent, run_id=run_id)
        if not candidates:
            known = self.checkpoint_envs()
            filters = ([f"agent {agent}"] if agent else []) + ([f"run {run_id}"] if run_id is not None else [])
            where = f" ({', '.join(filters)})" if filters else ""
            raise BadInput(f"there are no checkpoints for env {env}{where}; envs with checkpoints: "
                           f"{', '.join(known) if known else 'none — train an agent with --save-every first'}.")
        return candidates

    def suggest_checkpoint(self, env: str, quality: Quality | str, random_return: float | None = None,
                           target_fraction: float = 0.5, *, agent: str | None = None, run_id: int | None = None,
                           compute_random: RandomReturnFn | None = None, record_random: bool = True) -> Suggestion:
        """The suggested checkpoint of `env` for `quality` with every candidate and the rule applied.

        For `medium` without `random_return`, the registered random-policy return is used, else it is
        computed with `compute_random` (recorded only with `record_random`; otherwise the suggestion
        carries it as `unrecorded_random_return` for the caller to record once it acted), else taken as
        0 with a note.
        """
        quality = check_quality(quality)
        candidates = self.suggestion_candidates(env, agent, run_id)
        source, unrecorded = "given", None
        if quality == Quality.MEDIUM and random_return is None:
            resolved = resolve_random_return(self.artifacts, env, compute_random, record=record_random)
            random_return, source = resolved.value, resolved.source
            if not resolved.recorded and not resolved.source.startswith("assumed"):
                unrecorded = resolved.value
        suggestion = suggest_from(candidates, quality, random_return, target_fraction, random_source=source)
        if unrecorded is None:
            return suggestion
        return replace(suggestion, unrecorded_random_return=unrecorded)

    # -- datasets ---------------------------------------------------------------------------------------------

    def register_dataset(self, env: str, quality: Quality | str, payload: Path | str | bytes, *, episodes: int,
                         transitions: int, return_mean: float, return_std: float, format: DatasetFormat | str, seed: int,
                         checkpoint_id: int | None = None, promotion_id: int | None = None,
                         policy: str | None = None, metadata: Mapping[str, Any] | None = None) -> Dataset:
        return self.datasets.register_dataset(
            env, quality, payload, episodes=episodes, transitions=transitions, return_mean=return_mean,
            return_std=return_std, format=format, seed=seed, checkpoint_id=checkpoint_id,
            promotion_id=promotion_id, policy=policy, metadata=metadata)

    def get_dataset(self, dataset_id: int) -> Dataset:
        return self.datasets.get_dataset(dataset_id)

    def list_datasets(self, env: str | None = None, quality: str | None = None) -> list[Dataset]:
        return self.datasets.list_datasets(env, quality)

    def dataset_path(self, dataset_id: int) -> Path:
        return self.datasets.dataset_path(dataset_id)

    def dataset_lineage(self, dataset_id: int) -> list[LineageNode]:
        return self.datasets.dataset_lineage(dataset_id)

    # -- sweeps and build locks -----------------------------------------------------------------------------

    def create_sweep(self, spec: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], executor: str) -> Sweep:
        return self.sweeps.create_sweep(spec, tasks, executor)

    def get_sweep(self, sweep_id: int) -> Sweep:
        return self.sweeps.get_sweep(sweep_id)

    def list_sweeps(self) -> list[Sweep]:
        return self.sweeps.list_sweeps()

    def sweep_tasks(self, sweep_id: int) -> list[SweepTask]:
        return self.sweeps.sweep_tasks(sweep_id)

    def get_sweep_task(self, task_id: int) -> SweepTask:
        return self.sweeps.get_task(task_id)

    def set_sweep_state(self, sweep_id: int, state: str, error: str | None = None) -> Sweep:
        return self.sweeps.set_sweep_state(sweep_id, state, error)

    def claim_sweep_task(self, task_id: int, worker: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> SweepTask:
        return self.sweeps.claim_task(task_id, worker, stale_after_s)

    def sweep_task_heartbeat(self, task_id: int, worker: str) -> None:
        self.sweeps.task_heartbeat(task_id, worker)

    def set_sweep_task_group(self, task_id: int, group_id: str) -> None:
        self.sweeps.set_task_group(task_id, group_id)

    def finish_sweep_task(self, task_id: int, state: str, error: str | None = None) -> SweepTask:
        return self.sweeps.finish_task(task_id, state, error)

    def acquire_build_lock(self, key: str, holder: str, lease_s: float) -> bool:
        return self.build_locks.acquire(key, holder, lease_s)

    def renew_build_lock(self, key: str, holder: str, lease_s: float) -> None:
        self.build_locks.renew(key, holder, lease_s)

    def release_build_lock(self, key: str, holder: str) -> None:
        self.build_locks.release(key, holder)

    # -- integrity, housekeeping, overview --------------------------------------------------------------------

    def verify(self, fix: bool = False, scratch_older_than_s: float = SCRATCH_GRACE_S) -> VerifyReport:
        return self.verifier.verify(fix, scratch_older_than_s)

    def gc(self, *, apply: bool = False, keep_resume_states: int = 1,
           scratch_older_than_s: float = SCRATCH_GRACE_S) -> GcReport:
        return self.housekeeping.gc(apply=apply, keep_resume_states=keep_resume_states,
                                    scratch_older_than_s=scratch_older_than_s)

    def overview(self, limit: int = 10, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> Overview:
        return self.queries.overview(limit, stale_after_s)


def open_registry(settings: Settings | None = None, *, home: Path | str | None = None, url: str | None = None,
                  busy_timeout_s: float = 30.0) -> Registry:
    """The registry at `settings` (or at `home` / `url`, resolved like the CLI's --home / --registry-url)."""
    if settings is None:
        settings = Settings.resolve(home, url)
    return Registry(settings.registry_url, ArtifactStore(settings.artifacts_dir), busy_timeout_s=busy_timeout_s,
                    home=settings.home)
