"""The slatectl registry: the single source of truth for runs, checkpoints, artifacts, promotions and
datasets, backed by SQLite (default) or any SQLAlchemy database.

    from slatectl.registry import open_registry
    with open_registry(settings) as reg:
        run = reg.start_run("sac-gems", "diffuse_topdown", seed=1, config=cfg)
        ckpt = reg.register_checkpoint(run.id, 50_000, model.state_dict(), val_return_mean=..., ...)
"""

from slatectl.registry.api import Registry, open_registry
from slatectl.registry.datasets import LineageNode
from slatectl.registry.db import SCHEMA_VERSION
from slatectl.registry.hashing import config_hash
from slatectl.registry.models import (DATASET_FORMATS, PROMOTABLE_QUALITIES, QUALITIES, Artifact, Checkpoint, Dataset,
                             Promotion, Run, Validation)
from slatectl.registry.promotions import check_quality
from slatectl.registry.suggest import RandomReturn, Suggestion, compute_random_return, resolve_random_return, suggest_from
from slatectl.registry.verify import FileProblem, VerifyReport

__all__ = [
    "Registry", "open_registry", "SCHEMA_VERSION", "config_hash", "check_quality",
    "Run", "Validation", "Checkpoint", "Artifact", "Promotion", "Dataset", "LineageNode",
    "QUALITIES", "PROMOTABLE_QUALITIES", "DATASET_FORMATS",
    "Suggestion", "RandomReturn", "suggest_from", "resolve_random_return", "compute_random_return",
    "VerifyReport", "FileProblem",
]
