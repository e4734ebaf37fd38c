"""Offline datasets: the stored file, its summary statistics, and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sqlmodel import select

from slatectl.domain import RANDOM_POLICY, DatasetFormat, Quality
from slatectl.errors import BadInput
from slatectl.registry.database import Database
from slatectl.registry.hashing import canonical_json
from slatectl.registry.lookups import check_finite, check_quality, get_checkpoint, get_dataset
from slatectl.registry.models import Artifact, Dataset, Promotion, Run

DATASET_KIND = "dataset"


@dataclass
class LineageNode:
    """One step back in a dataset's history: what it is, its id, and a one-line description."""

    kind: str  # dataset | promotion | checkpoint | run | artifact
    id: int
    label: str
    details: dict[str, Any] = field(default_factory=dict)


class DatasetRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register_dataset(self, env: str, quality: Quality | str, payload: Path | str | bytes, *, episodes: int,
                         transitions: int, return_mean: float, return_std: float, format: DatasetFormat | str, seed: int,
                         checkpoint_id: int | None = None, promotion_id: int | None = None,
                         policy: str | None = None, metadata: Mapping[str, Any] | None = None) -> Dataset:
        """Store a collected dataset file (or bytes) and record it with its lineage.

        `medium`/`expert` datasets need the `checkpoint_id` that acted (of the same env); `random` none.
        """
        quality, format = check_quality(quality, allow_random=True).value, _dataset_format(format).value
        if episodes < 1 or transitions < 1:
            raise BadInput("a dataset needs at least one episode and one transition.")
        if (quality == Quality.RANDOM) != (checkpoint_id is None):
            raise BadInput("a random dataset has no checkpoint; medium and expert datasets need the checkpoint "
                           "that produced them.")
        metadata = dict(metadata or {})
        try:
            canonical_json(metadata)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"dataset metadata must be JSON-serialisable: {exc}") from exc
        values = dict(env=env, quality=quality, episodes=int(episodes), transitions=int(transitions),
                      return_mean=check_finite("return_mean", return_mean),
                      return_std=check_finite("return_std", return_std), format=format, seed=int(seed),
                      checkpoint_id=checkpoint_id, promotion_id=promotion_id, meta=metadata)
        with self.db.read() as session:
            values["policy"] = policy or _check_source(session, values)
        if isinstance(payload, (bytes, bytearray)):
            stored = self.db.store.put_bytes(DATASET_KIND, bytes(payload), suffix=f".{format}")
        else:
            stored = self.db.store.put_file(DATASET_KIND, Path(payload))

        def insert(session) -> Dataset:
            _check_source(session, values)
            dataset = Dataset(storage_key=stored.key, size=stored.size, sha256=stored.sha256, **values)
            session.add(dataset)
            session.flush()
            return dataset

        return self.db.insert_with_file(stored, insert)

    def get_dataset(self, dataset_id: int) -> Dataset:
        with self.db.read() as session:
            return get_dataset(session, dataset_id)

    def list_datasets(self, env: str | None = None, quality: str | None = None) -> list[Dataset]:
        query = select(Dataset).order_by(Dataset.id)
        if env:
            query = query.where(Dataset.env == env)
        if quality:
            query = query.where(Dataset.quality == quality)
        with self.db.read() as session:
            return list(session.exec(query))

    def dataset_path(self, dataset_id: int) -> Path:
        """The dataset's file, after its size and SHA-256 were checked."""
        dataset = self.get_dataset(dataset_id)
        return self.db.store.check(dataset.storage_key, dataset.size, dataset.sha256, what=f"file of dataset {dataset_id}")

    def dataset_lineage(self, dataset_id: int) -> list[LineageNode]:
        """The dataset, then the promotion and checkpoint that produced it, the checkpoint's run, and every
        artifact the run was built on with their parents (breadth first, each once)."""
        with self.db.read() as session:
            dataset = get_dataset(session, dataset_id)
            nodes = [LineageNode("dataset", dataset.id, f"{dataset.quality} dataset of {dataset.env}, policy {dataset.policy}")]
            if dataset.promotion_id is not None:
                promotion = session.get(Promotion, dataset.promotion_id)
                if promotion is not None:
                    nodes.append(LineageNode("promotion", promotion.id,
                                             f"{promotion.quality} for {promotion.env} by {promotion.promoted_by}",
                                             {"promoted_at": promotion.promoted_at.isoformat(), "note": promotion.note}))
            pending: list[int] = []
            if dataset.checkpoint_id is not None:
                checkpoint = get_checkpoint(session, dataset.checkpoint_id)
                nodes.append(LineageNode("checkpoint", checkpoint.id,
                                         f"{checkpoint.agent} step {checkpoint.step}, val return {checkpoint.val_return_mean:.3f}",
                                         {"sha256": checkpoint.sha256}))
                run = session.get(Run, checkpoint.run_id)
                if run is not None:
                    nodes.append(LineageNode("run", run.id, f"{run.agent} on {run.env}, seed {run.seed}",
                                             {"config_hash": run.config_hash, "code_version": run.code_version,
                                              "command": run.command}))
                    pending.extend(run.inputs)
            encoder = (dataset.meta or {}).get("encoder") or {}
            if encoder.get("artifact_id") is not None:  # the encoder of the dataset's features (a GeMS)
                pending.append(int(encoder["artifact_id"]))
            seen: set[int] = set()
            while pending:
                artifact_id = pending.pop(0)
                if artifact_id in seen:
                    continue
                seen.add(artifact_id)
                artifact = session.get(Artifact, artifact_id)
                if artifact is None:
                    continue
                nodes.append(LineageNode("artifact", artifact.id, f"{artifact.kind} for {artifact.env or 'any env'}",
                                         {"config_hash": artifact.config_hash, "parents": artifact.parents}))
                pending.extend(artifact.parents)
            return nodes


def _dataset_format(format: DatasetFormat | str) -> DatasetFormat:
    """A `DatasetFormat` as it is; a plain string (a script calling the registry) parsed here."""
    if isinstance(format, DatasetFormat):
        return format
    try:
        return DatasetFormat(format)
    except ValueError:
        raise BadInput(f"unknown dataset format {format!r}; choose one of {', '.join(DatasetFormat)}.") from None


def _check_source(session, values: dict) -> str:
    """Check the checkpoint / promotion the dataset claims to come from; return the acting policy's name."""
    if values["promotion_id"] is not None:
        promotion = session.get(Promotion, values["promotion_id"])
        if promotion is None:
            raise BadInput(f"there is no promotion {values['promotion_id']} in the registry.")
        if (promotion.env, promotion.quality, promotion.checkpoint_id) != (values["env"], values["quality"], values["checkpoint_id"]):
            raise BadInput(f"promotion {promotion.id} is for checkpoint {promotion.checkpoint_id} as {promotion.quality} "
                           f"on {promotion.env}, which does not match this dataset.")
    if values["checkpoint_id"] is None:
        return RANDOM_POLICY
    checkpoint = get_checkpoint(session, values["checkpoint_id"])
    if checkpoint.env != values["env"]:
        raise BadInput(f"checkpoint {checkpoint.id} was trained on {checkpoint.env}, not {values['env']}.")
    return checkpoint.agent
