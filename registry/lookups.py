"""Row lookups and argument checks shared by the repositories: each takes an open session (or a value)
and raises BadInput with a message that says what to do. Imports only the models."""

from __future__ import annotations

import math
from typing import Sequence

from slatectl.domain import PROMOTABLE_QUALITIES, Quality
from slatectl.errors import BadInput
from slatectl.registry.models import Artifact, Checkpoint, Dataset, Run


def check_finite(name: str, value: float) -> float:
    if value is None or not math.isfinite(float(value)):
        raise BadInput(f"{name} must be a finite number (got {value!r}).")
    return float(value)


def check_quality(quality: str, allow_random: bool = False) -> Quality:
    """The Quality for `quality`; `random` only with allow_random (there is no checkpoint to promote)."""
    try:
        parsed = Quality(quality)
    except ValueError:
        allowed = list(Quality) if allow_random else list(PROMOTABLE_QUALITIES)
        raise BadInput(f"unknown quality {quality!r}; choose one of {', '.join(allowed)}.") from None
    if parsed not in PROMOTABLE_QUALITIES and not allow_random:
        raise BadInput("quality 'random' is produced by the uniform random slate policy and needs no checkpoint, "
                       "so there is nothing to promote; `slatectl collect --quality random` works as it is.")
    return parsed


def get_run(session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise BadInput(f"there is no run {run_id} in the registry; `slatectl inspect` lists the runs.")
    return run


def get_checkpoint(session, checkpoint_id: int) -> Checkpoint:
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise BadInput(f"there is no checkpoint {checkpoint_id} in the registry; `slatectl ckpt list` shows them.")
    return checkpoint


def get_artifact(session, artifact_id: int) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise BadInput(f"there is no artifact {artifact_id} in the registry.")
    return artifact


def get_dataset(session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise BadInput(f"there is no dataset {dataset_id} in the registry; `slatectl inspect` lists the datasets.")
    return dataset


def require_artifacts(session, ids: Sequence[int]) -> None:
    for artifact_id in ids:
        get_artifact(session, int(artifact_id))
