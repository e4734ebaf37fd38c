"""Training runs: start, claim (the lease), heartbeat, finish, look up, and the validation points that
make a learning curve.

The lease: the process working on a run records its pid, host and a heartbeat time in the run's row.
While the status is `running` and the heartbeat is younger than `stale_after_s`, the lease is live
and `claim_run` refuses every other process (so a second `--resume` of a live run is refused). A
`running` run whose heartbeat is older is `stale`: its process died without saying so (kill -9, power
loss) and the run may be claimed again.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlalchemy import update
from sqlmodel import func, select

from slatectl import __version__
from slatectl.errors import BadInput, JobFailed
from slatectl.registry.database import Database
from slatectl.registry.db import serialize_on
from slatectl.registry.hashing import canonical_json, config_hash
from slatectl.registry.lookups import check_finite, get_run, require_artifacts
from slatectl.registry.lease import DEFAULT_STALE_AFTER_S, holder, run_liveness, this_process
from slatectl.registry.models import Artifact, Checkpoint, Run, RunStatus, Validation, utcnow

FINAL_STATUSES = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.INTERRUPTED)


def current_code_version() -> str:
    """slatectl's version, plus the git commit when running from a checkout."""
    version = f"slatectl {__version__}"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode == 0 and commit.stdout.strip():
        version += f" ({commit.stdout.strip()})"
    return version


class RunRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def start_run(self, agent: str, env: str, seed: int, config: Mapping[str, Any], *,
                  command: str | None = None, code_version: str | None = None,
                  inputs: Sequence[int] = (), group_id: str | None = None) -> Run:
        """Record a run as `running` with its resolved config, its lease held by the calling process;
        `inputs` are artifact ids it builds on; `group_id` ties the members of a population together."""
        if not agent or not env:
            raise BadInput("a run needs an agent and an env.")
        resolved = dict(config)
        try:
            canonical_json(resolved)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"the run's config is not JSON-serialisable: {exc}") from exc
        pid, host = this_process()
        with self.db.write() as session:
            require_artifacts(session, inputs)
            run = Run(agent=agent, env=env, seed=int(seed), config=resolved, config_hash=config_hash(resolved),
                      code_version=code_version or current_code_version(),
                      command=command if command is not None else shlex.join(sys.argv),
                      inputs=[int(i) for i in inputs], pid=pid, host=host, heartbeat_at=utcnow(),
                      group_id=group_id)
            session.add(run)
        return run

    def claim_run(self, run_id: int, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        """Take the run's lease for this process (status `running`, heartbeat now).

        BadInput (exit 2) naming the holder when another process's lease is live. Atomic: the check and
        the update happen in one write transaction, so of two concurrent claims exactly one wins.
        """
        pid, host = this_process()
        with self.db.write() as session:
            serialize_on(session, f"run:{run_id}")
            run = get_run(session, run_id)
            session.refresh(run)  # the newest committed values, read under the lock
            mine = (run.pid, run.host) == (pid, host)
            if not mine and run_liveness(run, stale_after_s) == RunStatus.RUNNING:
                age = (utcnow() - (run.heartbeat_at or run.started_at)).total_seconds()
                raise BadInput(f"run {run_id} is being worked on by {holder(run)} (heartbeat {age:.0f} s ago); "
                               f"stop that process first, or wait {stale_after_s:g} s after it died for the run "
                               "to show as stale.")
            run.pid, run.host, run.heartbeat_at = pid, host, utcnow()
            run.status, run.error, run.finished_at = RunStatus.RUNNING.value, None, None
            session.add(run)

    def release_run(self, previous: Run) -> None:
        """Give back a lease taken by `claim_run` when the work it was taken for was refused before it
        started (e.g. `--resume` found the resume state damaged): the run gets back the status, error,
        end time and lease it had (`previous`, read before the claim), as if nothing had happened. Only
        the lease holder can do this; a run claimed by another process meanwhile is left alone."""
        pid, host = this_process()
        with self.db.write() as session:
            serialize_on(session, f"run:{previous.id}")
            run = get_run(session, previous.id)
            session.refresh(run)
            if (run.pid, run.host) != (pid, host):
                return
            run.status, run.error, run.finished_at = previous.status, previous.error, previous.finished_at
            run.pid, run.host, run.heartbeat_at = previous.pid, previous.host, previous.heartbeat_at
            session.add(run)

    def heartbeat(self, run_id: int) -> None:
        """Say this process is still working on the run (one UPDATE). JobFailed if another process has
        taken the lease meanwhile: two processes must never train the same run."""
        pid, host = this_process()
        with self.db.write() as session:
            changed = session.execute(update(Run).where(Run.id == run_id, Run.pid == pid, Run.host == host)
                                      .values(heartbeat_at=utcnow())).rowcount
            if changed == 0:
                run = get_run(session, run_id)
                raise JobFailed(f"run {run_id}'s lease is now held by {holder(run)}, not by this process "
                                f"(pid {pid}@{host}); stopping so that two processes never train one run.")

    def finish_run(self, run_id: int, status: str = RunStatus.FINISHED, error: str | None = None) -> Run:
        """End the run as finished, failed or interrupted (a stopped run can be resumed)."""
        if status not in FINAL_STATUSES:
            raise BadInput(f"a run finishes as {', '.join(repr(s.value) for s in FINAL_STATUSES)}, not {status!r}.")
        with self.db.write() as session:
            run = get_run(session, run_id)
            run.status, run.error, run.finished_at = RunStatus(status).value, error, utcnow()
            session.add(run)
        return run

    def get_run(self, run_id: int) -> Run:
        with self.db.read() as session:
            return get_run(session, run_id)

    def list_runs(self, env: str | None = None, agent: str | None = None, status: str | None = None,
                  limit: int | None = None, group_id: str | None = None) -> list[Run]:
        query = select(Run).order_by(Run.id.desc())
        if group_id:
            query = query.where(Run.group_id == group_id)
        if env:
            query = query.where(Run.env == env)
        if agent:
            query = query.where(Run.agent == agent)
        if status:
            query = query.where(Run.status == status)
        if limit:
            query = query.limit(limit)
        with self.db.read() as session:
            return list(session.exec(query))

    def run_disk_usage(self, run_id: int) -> int:
        """Bytes in the store for the run: its checkpoints plus its artifacts still on disk (resume states)."""
        with self.db.read() as session:
            get_run(session, run_id)
            checkpoints = session.exec(select(func.coalesce(func.sum(Checkpoint.size), 0))
                                       .where(Checkpoint.run_id == run_id)).one()
            artifacts = session.exec(select(func.coalesce(func.sum(Artifact.size), 0))
                                     .where(Artifact.run_id == run_id, Artifact.pruned_at.is_(None))).one()
        return int(checkpoints) + int(artifacts)

    def record_validation(self, run_id: int, step: int, return_mean: float, return_std: float,
                          episodes: int) -> Validation:
        """A validation result at `step` (checkpoint or not); one per (run, step)."""
        point = Validation(run_id=run_id, step=int(step), return_mean=check_finite("return_mean", return_mean),
                           return_std=check_finite("return_std", return_std), episodes=int(episodes))
        with self.db.write() as session:
            get_run(session, run_id)
            if session.exec(select(Validation.id).where(Validation.run_id == run_id,
                                                        Validation.step == step)).first() is not None:
                raise BadInput(f"run {run_id} already has a validation result at step {step}.")
            session.add(point)
        return point

    def validations(self, run_id: int) -> list[Validation]:
        with self.db.read() as session:
            return list(session.exec(select(Validation).where(Validation.run_id == run_id).order_by(Validation.step)))
