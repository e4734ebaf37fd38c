"""The slatectl registry: the single source of truth for runs, checkpoints, artifacts, promotions and
datasets, backed by SQLite (default) or any SQLAlchemy database.

    from slatectl.registry import open_registry
    with open_registry(settings) as reg:
        run = reg.start_run("sac-gems", "diffuse_topdown", seed=1, config=cfg)
        ckpt = reg.register_checkpoint(run.id, 50_000, model.state_dict(), val_return_mean=..., ...)

`Registry` (registry/api.py) is the whole interface; the per-entity repositories behind it are
implementation. The registry depends only on slatectl.domain, slatectl.errors, slatectl.settings and
slatectl.storage: it never runs the simulator (callers pass in what needs it, e.g. the random-policy
return).
"""

from slatectl.domain import PROMOTABLE_QUALITIES, DatasetFormat, Quality
from slatectl.registry.api import Registry, open_registry
from slatectl.registry.artifacts import RESUME_STATE_KIND, ROLLOUT_KIND
from slatectl.registry.backup import BackupResult, RestoreResult, backup_registry, restore_registry
from slatectl.registry.datasets import LineageNode
from slatectl.registry.db import SCHEMA_VERSION, require_writable
from slatectl.registry.hashing import config_hash
from slatectl.registry.housekeeping import GcReport
from slatectl.registry.lease import DEFAULT_STALE_AFTER_S, STALE, run_liveness
from slatectl.registry.lookups import check_quality
from slatectl.registry.models import Artifact, Checkpoint, Dataset, Promotion, Run, RunStatus, Validation
from slatectl.registry.suggest import (Candidate, RandomReturn, RandomReturnFn, Suggestion, check_target_fraction,
                                       explain_untrained_ahead, resolve_random_return, suggest_from, untrained_ahead)
from slatectl.registry.verify import FileProblem, VerifyReport

__all__ = [
    "Registry", "open_registry", "SCHEMA_VERSION", "config_hash", "check_quality", "check_target_fraction",
    "Run", "RunStatus", "Validation", "Checkpoint", "Artifact", "Promotion", "Dataset", "LineageNode",
    "Quality", "PROMOTABLE_QUALITIES", "DatasetFormat", "RESUME_STATE_KIND", "ROLLOUT_KIND",
    "Candidate", "Suggestion", "RandomReturn", "RandomReturnFn", "suggest_from", "resolve_random_return", "untrained_ahead", "explain_untrained_ahead",
    "VerifyReport", "FileProblem", "GcReport", "DEFAULT_STALE_AFTER_S", "STALE", "run_liveness",
    "backup_registry", "restore_registry", "BackupResult", "RestoreResult", "require_writable",
]
