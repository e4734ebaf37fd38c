"""Plain-dict views of registry rows: the shapes `--json` prints and scripts rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slatectl.registry.models import Checkpoint, Dataset, Promotion, Run, Validation
from slatectl.registry.lease import run_liveness


def iso(moment: datetime | None) -> str | None:
    """UTC timestamps as ISO 8601 with an explicit zone (they are stored naive, in UTC)."""
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


def run_record(run: Run) -> dict[str, Any]:
    return {"id": run.id, "agent": run.agent, "env": run.env, "seed": run.seed, "group_id": run.group_id,
            "status": run.status,
            "config_hash": run.config_hash, "code_version": run.code_version, "command": run.command,
            "liveness": run_liveness(run), "pid": run.pid, "host": run.host, "heartbeat_at": iso(run.heartbeat_at),
            "inputs": list(run.inputs), "error": run.error, "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at), "config": run.config}


def checkpoint_record(checkpoint: Checkpoint, promoted_as: list[str] | None = None) -> dict[str, Any]:
    return {"id": checkpoint.id, "run_id": checkpoint.run_id, "env": checkpoint.env, "agent": checkpoint.agent,
            "step": checkpoint.step, "episodes": checkpoint.episodes, "env_steps": checkpoint.env_steps,
            "val_return": checkpoint.val_return_mean, "val_return_std": checkpoint.val_return_std,
            "val_episodes": checkpoint.val_episodes, "test_return": checkpoint.test_return_mean,
            "test_return_std": checkpoint.test_return_std, "test_episodes": checkpoint.test_episodes,
            "best": checkpoint.is_best, "last": checkpoint.is_last, "untrained": checkpoint.trained is False,
            "promoted_as": promoted_as or [],
            "storage_key": checkpoint.storage_key, "size": checkpoint.size, "sha256": checkpoint.sha256,
            "created_at": iso(checkpoint.created_at)}


def promotion_record(promotion: Promotion) -> dict[str, Any]:
    return {"id": promotion.id, "env": promotion.env, "quality": promotion.quality,
            "checkpoint_id": promotion.checkpoint_id, "promoted_at": iso(promotion.promoted_at),
            "promoted_by": promotion.promoted_by, "active": promotion.active,
            "superseded_by": promotion.superseded_by, "note": promotion.note}


def dataset_record(dataset: Dataset) -> dict[str, Any]:
    return {"id": dataset.id, "env": dataset.env, "quality": dataset.quality, "policy": dataset.policy,
            "checkpoint_id": dataset.checkpoint_id, "promotion_id": dataset.promotion_id,
            "episodes": dataset.episodes, "transitions": dataset.transitions, "mean_return": dataset.return_mean,
            "std_return": dataset.return_std, "format": dataset.format, "seed": dataset.seed,
            "storage_key": dataset.storage_key, "size": dataset.size, "sha256": dataset.sha256,
            "created_at": iso(dataset.created_at), "metadata": dataset.meta}


def validation_record(point: Validation) -> dict[str, Any]:
    return {"step": point.step, "return_mean": point.return_mean, "return_std": point.return_std,
            "episodes": point.episodes}
