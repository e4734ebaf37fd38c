"""Sweeps and their tasks: create a sweep with its tasks in one transaction, claim a task (its lease),
renew and finish it, list and look up.

A task's lease works as a run's (registry/runs.py): the worker records itself (`worker`, `heartbeat_at`);
while the task is `running` with a heartbeat younger than `stale_after_s`, `claim_task` refuses every
other worker. A worker that died without saying so leaves a stale lease that a retry may take.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlalchemy import update
from sqlmodel import select

from slatectl.errors import BadInput, JobFailed
from slatectl.registry.database import Database
from slatectl.registry.db import serialize_on
from slatectl.registry.hashing import config_hash
from slatectl.registry.models import Sweep, SweepState, SweepTask, utcnow

TASK_FINAL = (SweepState.FINISHED, SweepState.FAILED)


class SweepRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_sweep(self, spec: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], executor: str) -> Sweep:
        """The sweep and every task (`agent`, `overrides`, `members`) as `pending`, in one transaction."""
        if not tasks:
            raise BadInput("a sweep needs at least one task.")
        with self.db.write() as session:
            sweep = Sweep(spec=dict(spec), spec_hash=config_hash(dict(spec)), executor=executor)
            session.add(sweep)
            session.flush()
            for position, task in enumerate(tasks):
                session.add(SweepTask(sweep_id=sweep.id, position=position, agent=task["agent"],
                                      overrides=list(task["overrides"]),
                                      members=[[str(env), int(seed)] for env, seed in task["members"]]))
        return sweep

    def get_sweep(self, sweep_id: int) -> Sweep:
        with self.db.read() as session:
            return _sweep(session, sweep_id)

    def list_sweeps(self) -> list[Sweep]:
        with self.db.read() as session:
            return list(session.exec(select(Sweep).order_by(Sweep.id.desc())))

    def sweep_tasks(self, sweep_id: int) -> list[SweepTask]:
        with self.db.read() as session:
            _sweep(session, sweep_id)
            return list(session.exec(select(SweepTask).where(SweepTask.sweep_id == sweep_id)
                                     .order_by(SweepTask.position)))

    def get_task(self, task_id: int) -> SweepTask:
        with self.db.read() as session:
            return _task(session, task_id)

    def set_sweep_state(self, sweep_id: int, state: str, error: str | None = None) -> Sweep:
        state = SweepState(state).value
        with self.db.write() as session:
            sweep = _sweep(session, sweep_id)
            sweep.state, sweep.error = state, error
            sweep.finished_at = utcnow() if state in TASK_FINAL else None
            session.add(sweep)
        return sweep

    def claim_task(self, task_id: int, worker: str, stale_after_s: float) -> SweepTask:
        """Take the task's lease for `worker` (state `running`, one more attempt); BadInput when another
        worker's lease is live, and when the task already finished."""
        with self.db.write() as session:
            serialize_on(session, f"sweep-task:{task_id}")
            task = _task(session, task_id)
            session.refresh(task)
            if task.state == SweepState.FINISHED:
                raise BadInput(f"task {task.position} of sweep {task.sweep_id} has already finished.")
            if task.state == SweepState.RUNNING and task.worker != worker and not _stale(task, stale_after_s):
                raise BadInput(f"task {task.position} of sweep {task.sweep_id} is held by {task.worker} "
                               f"(heartbeat {_age(task):.0f} s ago).")
            task.state, task.worker, task.error = SweepState.RUNNING.value, worker, None
            task.heartbeat_at = task.started_at = utcnow()
            task.attempts += 1
            session.add(task)
        return task

    def task_heartbeat(self, task_id: int, worker: str) -> None:
        """Renew the task's lease; JobFailed when another worker took it meanwhile."""
        with self.db.write() as session:
            changed = session.execute(update(SweepTask).where(SweepTask.id == task_id, SweepTask.worker == worker)
                                      .values(heartbeat_at=utcnow())).rowcount
            if changed == 0:
                raise JobFailed(f"sweep task {task_id} is now held by another worker, not {worker}.")

    def set_task_group(self, task_id: int, group_id: str) -> None:
        with self.db.write() as session:
            task = _task(session, task_id)
            task.group_id = group_id
            session.add(task)

    def finish_task(self, task_id: int, state: str, error: str | None = None) -> SweepTask:
        """End the task as finished or failed, or give it back as `pending` (to be retried)."""
        state = SweepState(state).value
        if state == SweepState.RUNNING:
            raise BadInput("a task finishes as finished, failed or pending, not running.")
        with self.db.write() as session:
            task = _task(session, task_id)
            task.state, task.error = state, error
            task.finished_at = utcnow() if state in TASK_FINAL else None
            session.add(task)
        return task


def task_liveness(task: SweepTask, stale_after_s: float) -> str:
    """The task's state, except `stale` for a running task whose heartbeat is older than stale_after_s."""
    if task.state == SweepState.RUNNING and _stale(task, stale_after_s):
        return "stale"
    return task.state


def _stale(task: SweepTask, stale_after_s: float) -> bool:
    return _age(task) > stale_after_s


def _age(task: SweepTask) -> float:
    beat = task.heartbeat_at or task.started_at
    return (utcnow() - beat).total_seconds() if beat is not None else float("inf")


def _sweep(session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise BadInput(f"there is no sweep {sweep_id} in the registry; `slatectl sweep list` shows the sweeps.")
    return sweep


def _task(session, task_id: int) -> SweepTask:
    task = session.get(SweepTask, task_id)
    if task is None:
        raise BadInput(f"there is no sweep task {task_id} in the registry.")
    return task
