"""What `sweep status` shows per task: state (with `stale` for a worker that stopped renewing its lease),
members, the step its runs reached, their latest validation returns, the worker and its heartbeat age."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from slatectl.registry import Registry
from slatectl.registry.models import utcnow
from slatectl.registry.sweeps import task_liveness


@dataclass(frozen=True)
class TaskStatus:
    position: int
    task_id: int
    agent: str
    state: str
    members: int
    group_id: str | None
    run_ids: list[int]
    step: int | None  # the highest validated step over its runs
    steps: int
    val_returns: list[float]  # each run's latest validation return (member order)
    worker: str | None
    heartbeat_age_s: float | None
    attempts: int
    error: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepStatus:
    sweep_id: int
    state: str
    executor: str
    created_at: str
    tasks: list[TaskStatus]

    def to_dict(self) -> dict:
        return {"sweep_id": self.sweep_id, "state": self.state, "executor": self.executor,
                "created_at": self.created_at, "tasks": [t.to_dict() for t in self.tasks]}


def sweep_status(registry: Registry, sweep_id: int) -> SweepStatus:
    sweep = registry.get_sweep(sweep_id)
    lease_s = float(sweep.spec.get("lease_timeout_s", 120.0))
    rows = []
    for task in registry.sweep_tasks(sweep_id):
        runs = sorted(registry.list_runs(group_id=task.group_id), key=lambda r: r.id) if task.group_id else []
        latest = [registry.validations(run.id) for run in runs]
        returns = [points[-1].return_mean for points in latest if points]
        steps = [points[-1].step for points in latest if points]
        age = (utcnow() - task.heartbeat_at).total_seconds() if task.heartbeat_at else None
        rows.append(TaskStatus(task.position, task.id, task.agent, task_liveness(task, lease_s), len(task.members),
                               task.group_id, [r.id for r in runs], max(steps) if steps else None,
                               int(sweep.spec["steps"]), returns, task.worker, age, task.attempts, task.error))
    return SweepStatus(sweep.id, sweep.state, sweep.executor, sweep.created_at.isoformat(timespec="seconds"), rows)
