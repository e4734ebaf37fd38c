"""Executors place sweep tasks: `local` (processes on this machine) and `ray` (Ray tasks on a cluster).
Both call `worker.run_task` for each task; they differ only in where it runs and how a lost worker is
retried. New executors plug in through `EXECUTORS`.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Protocol

from slatectl.errors import BadInput
from slatectl.registry.db import parse_url
from slatectl.settings import Settings
from slatectl.sweep.spec import SweepSpec
from slatectl.sweep.worker import run_task

Say = Callable[[str], None]
SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class ExecutorOptions:
    jobs: int = 1                # local: tasks at once
    address: str | None = None   # ray: the cluster to join (None: start a local one)


class Executor(Protocol):
    def prepare(self, settings: Settings) -> None:
        """Check that the executor can run (and the registry suits it) before a sweep is created."""

    def run(self, settings: Settings, task_ids: list[int], spec: SweepSpec, say: Say) -> dict[int, str | None]:
        """Run the tasks; return each task's error (None when it finished)."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Tasks as processes on this machine, `jobs` at a time; each gets `--threads` torch threads (default
    1, the project's measured best on a shared machine: slatectl/threads.py), capped at its share of the
    cores (cores // jobs, at least 1) so that the tasks together never oversubscribe them.
    A task whose process died (the pool breaks) is resubmitted, up to the spec's max_retries; the
    others that the broken pool stopped with it are resubmitted too, and resume."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.jobs = options.jobs

    def prepare(self, settings: Settings) -> None:
        pass

    def threads(self, settings: Settings) -> int:
        return min(settings.threads or 1, max(1, cpu_count() // self.jobs))

    def run(self, settings: Settings, task_ids: list[int], spec: SweepSpec, say: Say) -> dict[int, str | None]:
        errors: dict[int, str | None] = {}
        todo, attempts = list(task_ids), {t: 0 for t in task_ids}
        threads = self.threads(settings)
        say(f"local executor: {len(todo)} task(s), {min(self.jobs, len(todo))} at a time, {threads} torch thread(s) each")
        while todo:
            lost: list[int] = []
            # Spawned, not forked: a forked child would inherit the parent's open SQLite connections (a
            # thread of the caller may hold one), and SQLite connections must not cross a fork.
            with ProcessPoolExecutor(max_workers=min(self.jobs, len(todo)), mp_context=SPAWN) as pool:
                futures = {pool.submit(run_task, settings, t, threads, spec.lease_timeout_s): t for t in todo}
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        future.result()
                        errors[task] = None
                    except BrokenProcessPool:
                        lost.append(task)
                    except Exception as exc:  # recorded on the task by the worker too
                        errors[task] = f"{type(exc).__name__}: {exc}"
            todo = []
            for task in lost:
                attempts[task] += 1
                if attempts[task] > spec.max_retries:
                    errors[task] = f"its worker process died {attempts[task]} times"
                else:
                    todo.append(task)
        return errors


class RayExecutor:
    """Each task a Ray task with the spec's num_cpus / num_gpus and `max_retries` (Ray reruns a task whose
    worker or node died; the rerun resumes the task's runs). The registry must be one every node
    reaches: an SQLite file is refused unless the whole cluster is this machine."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.address = options.address

    def prepare(self, settings: Settings) -> None:
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=True, configure_logging=False)
        nodes = [node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")]
        check_shared_registry(settings.registry_url, nodes, this_machine(ray.util.get_node_ip_address()))

    def run(self, settings: Settings, task_ids: list[int], spec: SweepSpec, say: Say) -> dict[int, str | None]:
        ray = import_ray()
        remote = ray.remote(num_cpus=spec.resources.num_cpus, num_gpus=spec.resources.num_gpus,
                            max_retries=spec.max_retries, retry_exceptions=False)(run_task)
        threads = settings.threads or max(1, int(spec.resources.num_cpus))
        shared = Settings(home=settings.home.resolve(), registry_url=settings.registry_url, debug=settings.debug,
                          threads=settings.threads)
        say(f"ray executor: {len(task_ids)} task(s) on {len(ray.nodes())} node(s), {spec.resources.num_cpus:g} CPU "
            f"and {spec.resources.num_gpus:g} GPU each, up to {spec.max_retries} retries")
        refs = {remote.remote(shared, t, threads, spec.lease_timeout_s): t for t in task_ids}
        errors: dict[int, str | None] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    ray.get(ref)
                    errors[refs[ref]] = None
                except Exception as exc:  # the task's own error (recorded on it) or its worker lost for good
                    errors[refs[ref]] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return errors


def import_ray():
    try:
        import ray  # optional extra: only `--executor ray` needs it
    except ImportError as exc:
        raise BadInput("--executor ray needs Ray: pip install 'slatectl[ray]'.") from exc
    return ray


def this_machine(ray_address: str) -> set[str]:
    """The addresses under which a Ray node on this machine may register itself."""
    addresses = {ray_address, "127.0.0.1", "localhost", socket.gethostname()}
    try:
        addresses.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return addresses


def check_shared_registry(registry_url: str, node_addresses: list[str], this_addresses: set[str]) -> None:
    """BadInput when the registry is an SQLite file and some node of the cluster is another machine:
    only a database server (PostgreSQL) is one registry for every machine."""
    if parse_url(registry_url).get_backend_name() != "sqlite":
        return
    others = sorted({address for address in node_addresses if address not in this_addresses})
    if others:
        raise BadInput(f"the Ray cluster has nodes on other machines ({', '.join(others)}) but the registry is an "
                       "SQLite file that only this machine sees; give a shared database with "
                       "--registry-url postgresql://USER@HOST/DB (and a --home on a filesystem every node mounts).")


EXECUTORS: dict[str, Callable[[ExecutorOptions], Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, options: ExecutorOptions) -> Executor:
    if name not in EXECUTORS:
        raise BadInput(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}.")
    return EXECUTORS[name](options)
