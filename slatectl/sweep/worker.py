"""What runs one sweep task, wherever an executor places it (a local process or a Ray worker).

1. Claim the task's lease (waiting for a dead worker's lease to go stale).
2. If the task's population already has its runs (an earlier attempt died), take their leases (again
   waiting out a dead worker's) and resume them from their newest resume state (`--resume GROUP`);
   checkpoint registration is idempotent per (run, step), so the steps the dead worker saved are
   neither redone in the registry nor duplicated. Otherwise record a fresh group id on the task first,
   then train the population under it (`Trainer`), so a later attempt finds the runs.
3. Finish the task (`finished`; `failed` with the error; `pending` when stopped by a signal).

A background thread renews the task's lease; the runs renew their own (the training loop's heartbeat).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from slatectl.errors import BadInput
from slatectl.registry import Registry, open_registry
from slatectl.settings import Settings
from slatectl.sweep.tasks import member_configs
from slatectl.threads import configure_torch_threads
from slatectl.train.build_once import PeriodicRenewal
from slatectl.train.loop import RunInterrupted, Trainer
from slatectl.train.orchestration import logs_dir
from slatectl.train.population import new_group_id
from slatectl.train.progress import PlainReporter

POLL_S = 1.0


@dataclass(frozen=True)
class TaskOutcome:
    task_id: int
    state: str
    worker: str
    run_ids: tuple[int, ...] = ()
    error: str | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(settings: Settings, task_id: int, threads: int, lease_s: float) -> TaskOutcome:
    """Run (or resume) sweep task `task_id` in this process; see the module doc. Raises on failure (after
    recording it), so an executor sees the failure too."""
    os.environ["SLATECTL_LEASE_S"] = f"{lease_s:g}"  # runs heartbeat every lease/4; builds lease for lease_s
    configure_torch_threads(threads)
    worker = worker_name()
    with open_registry(settings) as registry:
        task = registry.get_sweep_task(task_id)
        if task.state == "finished":
            return TaskOutcome(task_id, "finished", worker, _run_ids(registry, task.group_id))
        _wait(lambda: _try(lambda: registry.claim_sweep_task(task_id, worker, lease_s)), lease_s,
              f"sweep task {task_id}")
        with _task_heartbeat(registry, task_id, worker, lease_s):
            try:
                run_ids = _train(settings, registry, task_id, lease_s)
            except RunInterrupted as exc:
                registry.finish_sweep_task(task_id, "pending", error=str(exc))
                raise
            except BaseException as exc:
                registry.finish_sweep_task(task_id, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
                raise
        registry.finish_sweep_task(task_id, "finished")
    return TaskOutcome(task_id, "finished", worker, tuple(run_ids))


def _train(settings: Settings, registry: Registry, task_id: int, lease_s: float) -> list[int]:
    task = registry.get_sweep_task(task_id)
    spec = registry.get_sweep(task.sweep_id).spec
    label = f"sweep {task.sweep_id} task {task.position} ({task.agent})"
    reporter = PlainReporter(label)
    command = f"slatectl sweep run (sweep {task.sweep_id}, task {task.position})"
    runs = registry.list_runs(group_id=task.group_id) if task.group_id else []
    if runs and len(runs) == len(task.members):
        if all(run.status == "finished" for run in runs):
            return sorted(run.id for run in runs)
        for run in runs:  # a dead worker's leases go stale after lease_s; then they are ours
            if run.status != "finished":
                _wait(lambda r=run: _try(lambda: registry.claim_run(r.id, stale_after_s=lease_s)), lease_s,
                      f"run {run.id}")
        reporter.message(f"resuming population {task.group_id} (attempt {task.attempts})")
        results = Trainer.resume(registry, task.group_id, reporter, logs_dir=logs_dir(settings))
        return [r.run_id for r in results]
    for run in runs:  # an attempt that died while recording its members: those runs never trained
        registry.finish_run(run.id, status="failed", error="its sweep task was restarted before every member was recorded")
    configs = member_configs(spec["steps"], spec["save_every"], task.agent, task.overrides, task.members)
    group = f"{new_group_id()}-s{task.sweep_id}t{task.position}"
    registry.set_sweep_task_group(task_id, group)
    results = Trainer(registry, configs, reporter, logs_dir=logs_dir(settings)).run(command, group)
    return [r.run_id for r in results]


def _run_ids(registry: Registry, group: str | None) -> tuple[int, ...]:
    return tuple(sorted(run.id for run in registry.list_runs(group_id=group))) if group else ()


def _try(claim) -> bool:
    """True when the claim succeeded; False when another live holder refused it."""
    try:
        claim()
        return True
    except BadInput as exc:
        if "already finished" in str(exc):
            raise
        return False


def _wait(attempt, lease_s: float, what: str) -> None:
    """Repeat `attempt` until it succeeds; a dead holder's lease is stale after lease_s, so give up
    (BadInput naming the holder) only well after that."""
    deadline = time.monotonic() + 3 * lease_s
    while not attempt():
        if time.monotonic() > deadline:
            raise BadInput(f"{what} is still held by a live worker after {3 * lease_s:g} s; is the sweep "
                           "running twice?")
        time.sleep(POLL_S)


def _task_heartbeat(registry: Registry, task_id: int, worker: str, lease_s: float) -> PeriodicRenewal:
    """Renews the task's lease every quarter lease while the task runs (a failed renewal is retried: the
    runs' own leases decide a takeover)."""
    return PeriodicRenewal(f"sweep task {task_id}", lease_s,
                           lambda: registry.sweep_task_heartbeat(task_id, worker), stop_on_error=False)

