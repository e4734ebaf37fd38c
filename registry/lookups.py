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


def check_quality(quality: Quality | str, allow_random: bool = False) -> Quality:
    """The Quality for `quality`; `random` only with allow_random (there is no checkpoint to promote).

    A `Quality` member is taken as it is (it was parsed where it entered: a CLI option, a sweep spec); a
    plain string, from a script calling the registry, is parsed here, at the registry's edge.
    """
    parsed = quality if isinstance(quality, Quality) else parse_quality(quality, allow_random)
    if parsed not in PROMOTABLE_QUALITIES and not allow_random:
        raise BadInput("quality 'random' is produced by the uniform random slate policy and needs no checkpoint, "
                       "so there is nothing to promote; `slatectl collect --quality random` works as it is.")
    return parsed


def parse_quality(text: str, allow_random: bool = True) -> Quality:
    """A quality's name as a `Quality`; BadInput listing the allowed names otherwise."""
    try:
        return Quality(text)
    except ValueError:
        allowed = list(Quality) if allow_random else list(PROMOTABLE_QUALITIES)
        raise BadInput(f"unknown quality {text!r}; choose one of {', '.join(allowed)}.") from None


def _get(session, model, row_id: int, what: str, where: str):
    row = session.get(model, row_id)
    if row is None:
        raise BadInput(f"there is no {what} {row_id} in the registry{where}.")
    return row


def get_run(session, run_id: int) -> Run:
    return _get(session, Run, run_id, "run", "; `slatectl inspect` lists the runs")


def get_checkpoint(session, checkpoint_id: int) -> Checkpoint:
    return _get(session, Checkpoint, checkpoint_id, "checkpoint", "; `slatectl ckpt list` shows them")


def get_artifact(session, artifact_id: int) -> Artifact:
    return _get(session, Artifact, artifact_id, "artifact", "")


def get_dataset(session, dataset_id: int) -> Dataset:
    return _get(session, Dataset, dataset_id, "dataset", "; `slatectl inspect` lists the datasets")


def require_artifacts(session, ids: Sequence[int]) -> None:
    for artifact_id in ids:
        get_artifact(session, int(artifact_id))
