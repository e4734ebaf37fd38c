"""Artifacts other than agent checkpoints (logged data, GeMS, MF embeddings, policy rollouts), each
with its config, metrics and the ids of the artifacts it was built from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlmodel import select

from slatectl.registry.hashing import canonical_json, config_hash as hash_config
from slatectl.registry.models import Artifact, Run
from slatectl.errors import BadInput
from slatectl.storage import StoredFile

ROLLOUT_KIND = "rollout"  # a fixed policy's return on an env (e.g. the random policy, for `promote`)

Payload = bytes | Path | str | Mapping[str, Any]


class ArtifactOps:
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
        with self.read() as session:
            _check_references(session, parents, run_id)
        stored = self._store_payload(kind, payload, suffix)

        def insert(session) -> Artifact:
            _check_references(session, parents, run_id)
            artifact = Artifact(kind=kind, env=env, config=config, config_hash=hash_config(config),
                                metrics=metrics, parents=parents, run_id=run_id, storage_key=stored.key,
                                size=stored.size, sha256=stored.sha256)
            session.add(artifact)
            session.flush()
            return artifact

        return self._insert_stored(stored, insert)

    def _store_payload(self, kind: str, payload: Payload, suffix: str | None) -> StoredFile:
        if isinstance(payload, (bytes, bytearray)):
            return self.store.put_bytes(kind, bytes(payload), suffix or ".bin")
        if isinstance(payload, (str, Path)):
            return self.store.put_file(kind, Path(payload), suffix)
        if isinstance(payload, Mapping):
            return self.store.put_state_dict(kind, payload)
        raise BadInput(f"cannot store a {type(payload).__name__}: give bytes, a file path or a state dict.")

    def get_artifact(self, artifact_id: int) -> Artifact:
        with self.read() as session:
            return _get_artifact(session, artifact_id)

    def find_artifact(self, kind: str, env: str | None = None, config_hash: str | None = None,
                      config: Mapping[str, Any] | None = None) -> Artifact | None:
        """The newest artifact of `kind` for `env` (and config, given as a hash or a dict), or None."""
        wanted = config_hash if config_hash is not None else (hash_config(config) if config is not None else None)
        query = select(Artifact).where(Artifact.kind == kind).order_by(Artifact.id.desc())
        if env is not None:
            query = query.where(Artifact.env == env)
        if wanted is not None:
            query = query.where(Artifact.config_hash == wanted)
        with self.read() as session:
            return session.exec(query).first()

    def list_artifacts(self, kind: str | None = None, env: str | None = None) -> list[Artifact]:
        query = select(Artifact).order_by(Artifact.id)
        if kind:
            query = query.where(Artifact.kind == kind)
        if env:
            query = query.where(Artifact.env == env)
        with self.read() as session:
            return list(session.exec(query))

    def artifact_path(self, artifact_id: int) -> Path:
        """The artifact's file, after its size and SHA-256 were checked."""
        artifact = self.get_artifact(artifact_id)
        return self.store.check(artifact.storage_key, artifact.size, artifact.sha256,
                                what=f"file of artifact {artifact_id} ({artifact.kind})")

    def read_artifact_bytes(self, artifact_id: int) -> bytes:
        artifact = self.get_artifact(artifact_id)
        return self.store.read_verified(artifact.storage_key, artifact.size, artifact.sha256,
                                        what=f"file of artifact {artifact_id} ({artifact.kind})")

    def load_artifact_state(self, artifact_id: int, map_location: str = "cpu") -> dict[str, Any]:
        artifact = self.get_artifact(artifact_id)
        return self.store.load_state_dict(artifact.storage_key, artifact.size, artifact.sha256,
                                          what=f"file of artifact {artifact_id} ({artifact.kind})",
                                          map_location=map_location)

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
        with self.read() as session:
            for artifact in session.exec(query):
                if artifact.config.get("policy") == policy and "mean_return" in artifact.metrics:
                    return float(artifact.metrics["mean_return"]), artifact
        return None


def _get_artifact(session, artifact_id: int) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise BadInput(f"there is no artifact {artifact_id} in the registry.")
    return artifact


def _check_references(session, parents: Sequence[int], run_id: int | None) -> None:
    for parent in parents:
        _get_artifact(session, parent)
    if run_id is not None and session.get(Run, run_id) is None:
        raise BadInput(f"there is no run {run_id} in the registry.")
