"""Training runs: start, finish, look up, and the validation points that make a learning curve."""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlmodel import select

from slatectl.registry.hashing import canonical_json, config_hash
from slatectl.registry.models import RUN_STATUSES, Artifact, Run, Validation, utcnow
from slatectl.errors import BadInput


def current_code_version() -> str:
    """slatectl's version, plus the git commit when running from a checkout."""
    from slatectl import __version__

    version = f"slatectl {__version__}"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode == 0 and commit.stdout.strip():
        version += f" ({commit.stdout.strip()})"
    return version


def check_finite(name: str, value: float) -> float:
    if value is None or not math.isfinite(float(value)):
        raise BadInput(f"{name} must be a finite number (got {value!r}).")
    return float(value)


class RunOps:
    def start_run(self, agent: str, env: str, seed: int, config: Mapping[str, Any], *,
                  command: str | None = None, code_version: str | None = None,
                  inputs: Sequence[int] = ()) -> Run:
        """Record a run as `running` with its resolved config; `inputs` are artifact ids it builds on."""
        if not agent or not env:
            raise BadInput("a run needs an agent and an env.")
        resolved = dict(config)
        try:
            canonical_json(resolved)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"the run's config is not JSON-serialisable: {exc}") from exc
        with self.write() as session:
            _require_artifacts(session, inputs)
            run = Run(agent=agent, env=env, seed=int(seed), config=resolved, config_hash=config_hash(resolved),
                      code_version=code_version or current_code_version(),
                      command=command if command is not None else shlex.join(sys.argv),
                      inputs=[int(i) for i in inputs])
            session.add(run)
        return run

    def finish_run(self, run_id: int, status: str = "finished", error: str | None = None) -> Run:
        if status not in RUN_STATUSES or status == "running":
            raise BadInput(f"a run finishes as 'finished', 'failed' or 'interrupted', not {status!r}.")
        with self.write() as session:
            run = _get_run(session, run_id)
            run.status, run.error, run.finished_at = status, error, utcnow()
            session.add(run)
        return run

    def get_run(self, run_id: int) -> Run:
        with self.read() as session:
            return _get_run(session, run_id)

    def list_runs(self, env: str | None = None, agent: str | None = None, status: str | None = None,
                  limit: int | None = None) -> list[Run]:
        query = select(Run).order_by(Run.id.desc())
        if env:
            query = query.where(Run.env == env)
        if agent:
            query = query.where(Run.agent == agent)
        if status:
            query = query.where(Run.status == status)
        if limit:
            query = query.limit(limit)
        with self.read() as session:
            return list(session.exec(query))

    def record_validation(self, run_id: int, step: int, return_mean: float, return_std: float,
                          episodes: int) -> Validation:
        """A validation result at `step` (checkpoint or not); one per (run, step)."""
        point = Validation(run_id=run_id, step=int(step), return_mean=check_finite("return_mean", return_mean),
                           return_std=check_finite("return_std", return_std), episodes=int(episodes))
        with self.write() as session:
            _get_run(session, run_id)
            if session.exec(select(Validation.id).where(Validation.run_id == run_id,
                                                        Validation.step == step)).first() is not None:
                raise BadInput(f"run {run_id} already has a validation result at step {step}.")
            session.add(point)
        return point

    def validations(self, run_id: int) -> list[Validation]:
        with self.read() as session:
            return list(session.exec(select(Validation).where(Validation.run_id == run_id).order_by(Validation.step)))


def _get_run(session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise BadInput(f"there is no run {run_id} in the registry; `slatectl inspect` lists the runs.")
    return run


def _require_artifacts(session, ids: Sequence[int]) -> None:
    for artifact_id in ids:
        if session.get(Artifact, int(artifact_id)) is None:
            raise BadInput(f"there is no artifact {artifact_id} in the registry.")
