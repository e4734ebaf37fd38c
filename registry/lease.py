"""A run's lease: which process works on it and whether that process still says it is alive.

Pure functions over a Run row (no database access), shared by the run repository, the overview and the
JSON records.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from slatectl.registry.models import Run, RunStatus, utcnow

# A heartbeat older than this marks a `running` run as stale (the training loop beats far more often).
DEFAULT_STALE_AFTER_S = 120.0
STALE = "stale"


def this_process() -> tuple[int, str]:
    """(pid, host) of the calling process: the identity a lease records."""
    return os.getpid(), socket.gethostname()


def run_liveness(run: Run, stale_after_s: float = DEFAULT_STALE_AFTER_S, now: datetime | None = None) -> str:
    """The run's status, except `stale` for a `running` run whose heartbeat is older than stale_after_s
    (runs from before leases existed count from their start time)."""
    if run.status != RunStatus.RUNNING:
        return run.status
    beat = run.heartbeat_at or run.started_at
    age = ((now or utcnow()) - beat).total_seconds()
    return STALE if age > stale_after_s else RunStatus.RUNNING.value


def holder(run: Run) -> str:
    return f"pid {run.pid}@{run.host}" if run.pid is not None else "an unknown process"
