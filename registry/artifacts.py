"""Artifacts other than agent checkpoints (logged data, GeMS, MF embeddings, policy rollouts, resume
states), each with its config, metrics and the ids of the artifacts it was built from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlmodel import select

from slatectl.errors import BadInput
from slatectl.registry.database import STORE_LOCK, Database
from slatectl.registry.db import serialize_on
from slatectl.registry.hashing import canonical_json, config_hash as hash_config
from slatectl.registry.lookups import get_artifact, get_run
from slatectl.registry.models import Artifact, utcnow
from slatectl.storage import StoredFile

ROLLOUT_KIND = "rollout"  # a fixed policy's return on an env (e.g. the random policy, for `promote`)
# What the training loop saves to continue a run (`train --resume`); its config holds the run id and step.
RESUME_STATE_KIND = "resume-state"

Payload = bytes | Path | str | Mapping[str, Any]


class ArtifactRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register_artifact(self, kind: str, env: str | None, payload: Payload, *,
                          config: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                          parents: Sequence[int] = (), run_id: int | None = None,
                          suffix: str | None = None) -> Artifact:
        """Store `payload` (bytes, a file path, or a torch state dict) and record it.

        `parents` are the ids of the artifacts it was built from; `run_id` the run that produced it.
        """
        config, metrics = dict(config or {}), dict(metrics or {})
        try:
            canonical_json(config), canonical_json(metrics)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"an artifact's config and metrics must be JSON-serialisable: {exc}") from exc
        parents = [int(p) for p in parents]
        with self.db.read() as session:
            check_references(session, parents, run_id)
        stored = self._store_payload(kind, payload, suffix)

        def insert(session) -> Artifact:
            check_references(session, parents, run_id)
            artifact = Artifact(kind=kind, env=env, config=config, config_hash=hash_config(config),
                                metrics=metrics, parents=parents, run_id=run_id, storage_key=stored.key,
                                size=stored.size, sha256=stored.sha256)
            session.add(artifact)
            session.flush()
            return artifact

        return self.db.insert_with_file(stored, insert)

    def _store_payload(self, kind: str, payload: Payload, suffix: str | None) -> StoredFile:
        store = self.db.store
        if isinstance(payload, (bytes, bytearray)):
            return store.put_bytes(kind, bytes(payload), suffix or ".bin")
        if isinstance(payload, (str, Path)):
            return store.put_file(kind, Path(payload), suffix)
        if isinstance(payload, Mapping):
            return store.put_state_dict(kind, payload)
        raise BadInput(f"cannot store a {type(payload).__name__}: give bytes, a file path or a state dict.")

    def get_artifact(self, artifact_id: int) -> Artifact:
        with self.db.read() as session:
            return get_artifact(session, artifact_id)

    def find_artifact(self, kind: str, env: str | None = None, config_hash: str | None = None,
                      config: Mapping[str, Any] | None = None) -> Artifact | None:
        """The newest artifact of `kind` for `env` (and config, given as a hash or a dict) whose file was
        not pruned, or None."""
        wanted = config_hash if config_hash is not None else (hash_config(config) if config is not None else None)
        query = (select(Artifact).where(Artifact.kind == kind, Artifact.pruned_at.is_(None))
                 .order_by(Artifact.id.desc()))
        if env is not None:
            query = query.where(Artifact.env == env)
        if wanted is not None:
            query = query.where(Artifact.config_hash == wanted)
        with self.db.read() as session:
            return session.exec(query).first()

    def list_artifacts(self, kind: str | None = None, env: str | None = None, *,
                       include_pruned: bool = False) -> list[Artifact]:
        """Artifacts in id order; those whose superseded file was pruned only with include_pruned."""
        query = select(Artifact).order_by(Artifact.id)
        if kind:
            query = query.where(Artifact.kind == kind)
        if env:
            query = query.where(Artifact.env == env)
        if not include_pruned:
            query = query.where(Artifact.pruned_at.is_(None))
        with self.db.read() as session:
            return list(session.exec(query))

    def _what(self, artifact: Artifact) -> str:
        return f"file of artifact {artifact.id} ({artifact.kind})"

    def artifact_path(self, artifact_id: int) -> Path:
        """The artifact's file, after its size and SHA-256 were checked."""
        artifact = self.get_artifact(artifact_id)
        return self.db.store.check(artifact.storage_key, artifact.size, artifact.sha256, what=self._what(artifact))

    def read_artifact_bytes(self, artifact_id: int) -> bytes:
        artifact = self.get_artifact(artifact_id)
        return self.db.store.read_verified(artifact.storage_key, artifact.size, artifact.sha256,
                                           what=self._what(artifact))

    def load_artifact_state(self, artifact_id: int, map_location: str = "cpu") -> dict[str, Any]:
        artifact = self.get_artifact(artifact_id)
        return self.db.store.load_state_dict(artifact.storage_key, artifact.size, artifact.sha256,
                                             what=self._what(artifact), map_location=map_location)

    # -- fixed-policy returns --------------------------------------------------------------------------

    def record_policy_return(self, env: str, policy: str, mean: float, std: float | None = None,
                             episodes: int | None = None, seed: int | None = None) -> Artifact:
        """Register a fixed policy's mean return on `env` (e.g. `random`, used by `ckpt promote`)."""
        summary = {"env": env, "policy": policy, "mean_return": float(mean), "std_return": std,
                   "episodes": episodes, "seed": seed}
        return self.register_artifact(ROLLOUT_KIND, env, json.dumps(summary, indent=2).encode(),
                                      config={"policy": policy, "episodes": episodes, "seed": seed},
                                      metrics={"mean_return": float(mean), "std_return": std}, suffix=".json")

    def policy_return(self, env: str, policy: str) -> tuple[float, Artifact] | None:
        """The newest registered mean return of `policy` on `env`, with its artifact, or None."""
        query = select(Artifact).where(Artifact.kind == ROLLOUT_KIND, Artifact.env == env).order_by(Artifact.id.desc())
        with self.db.read() as session:
            for artifact in session.exec(query):
                if artifact.config.get("policy") == policy and "mean_return" in artifact.metrics:
                    return float(artifact.metrics["mean_return"]), artifact
        return None

    # -- resume states ---------------------------------------------------------------------------------

    def resume_states(self, run_id: int) -> list[Artifact]:
        """The run's resume states still on disk, oldest step first."""
        with self.db.read() as session:
            return _resume_states(session, run_id)

    def prune_resume_states(self, run_id: int, keep: int = 1) -> list[Artifact]:
        """Remove the files of all but the `keep` newest (highest step) resume states of the run.

        Call it after the newest one was registered. A superseded resume state is not user data (only the
        newest is ever loaded, by `--resume`) and is large (the replay buffer), so its file is deleted,
        not moved to the trash; its row stays, marked `pruned_at`, as history. The rows are marked in
        one transaction first, then the files deleted: a crash in between leaves files that `registry gc`
        deletes later, never a row pointing at a file that a reader still expects.
        """
        if int(keep) < 1:
            raise BadInput(f"keep must be at least 1 so that the run stays resumable (got {keep}).")
        with self.db.write() as session:
            serialize_on(session, STORE_LOCK)
            get_run(session, run_id)
            states = _resume_states(session, run_id)
            superseded = states[:-int(keep)] if len(states) > keep else []
            now = utcnow()
            for artifact in superseded:
                artifact.pruned_at = now
                session.add(artifact)
        self.remove_pruned_files(superseded)
        return superseded

    def pruned_files_on_disk(self) -> list[Artifact]:
        """Artifacts marked pruned whose file is still in the store (a prune interrupted before deleting)."""
        with self.db.read() as session:
            rows = list(session.exec(select(Artifact).where(Artifact.pruned_at.is_not(None))))
        return [a for a in rows if self.db.store.exists(a.storage_key)]

    def remove_pruned_files(self, artifacts: Sequence[Artifact]) -> None:
        for artifact in artifacts:
            if artifact.pruned_at is None:
                raise BadInput(f"artifact {artifact.id} is not pruned; its file is not removed.")
            self.db.store.remove(artifact.storage_key)


def _resume_states(session, run_id: int) -> list[Artifact]:
    rows = session.exec(select(Artifact).where(Artifact.kind == RESUME_STATE_KIND, Artifact.run_id == run_id,
                                               Artifact.pruned_at.is_(None)))
    return sorted(rows, key=lambda a: (int(a.config.get("step", -1)), a.id))


def check_references(session, parents: Sequence[int], run_id: int | None) -> None:
    for parent in parents:
        get_artifact(session, parent)
    if run_id is not None:
        get_run(session, run_id)
