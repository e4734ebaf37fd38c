"""`slatectl sweep ...`: run a grid of training populations on this machine or a Ray cluster, watch it,
resume it. `status` and `list` read the registry only; `run` and `resume` import the training stack
(torch) when they run, so that watching a sweep starts fast (docs/architecture.md rule 4)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from slatectl.cli.common import JOBS_RANGE, console, err_console, get_settings, print_json
from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.sweep.status import SweepStatus, sweep_status

app = typer.Typer(help="Sweeps: grids of training populations on this machine or a Ray cluster.\n\n"
                       "Example: slatectl sweep run configs/sweeps/paper_sac_gems.yaml --executor local --jobs 2",
                  no_args_is_help=True)

# The executors' names (slatectl/sweep/executors.py, EXECUTORS), listed here so --help needs no torch.
ExecutorName = Enum("ExecutorName", {name: name for name in ("local", "ray")}, type=str)
MAX_ID = 2**63 - 1


@app.callback()
def _group() -> None:
    """Sweeps: grids of training populations on this machine or a Ray cluster.

    Example: slatectl sweep run configs/sweeps/paper_sac_gems.yaml --executor ray --address auto
    """


def _say(text: str) -> None:
    err_console.print(text, highlight=False)


@app.command("run")
def run(
    spec_file: Path = typer.Argument(..., metavar="SPEC.yaml", help="The sweep spec (agents, envs, seeds, steps, …)."),
    executor: ExecutorName = typer.Option("local", "--executor", help="local: processes on this machine; ray: a Ray cluster."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR", help="With ray: the cluster to join (e.g. HEAD:6379, or auto)."),
    jobs: int = typer.Option(1, "--jobs", metavar="K", **JOBS_RANGE, help="With local: tasks at once (torch threads are divided among them)."),
) -> None:
    """Run a sweep: every task (one population of an agent and override set) trained, retried when its
    worker dies, and resumed from its last save.

    Example: slatectl sweep run configs/sweeps/paper_sac_gems.yaml --executor local --jobs 2

    Example: slatectl --registry-url postgresql://me@db/slatectl --home /shared/slatectl sweep run SPEC.yaml --executor ray --address auto
    """
    from slatectl.sweep.driver import run_sweep
    from slatectl.sweep.executors import ExecutorOptions
    from slatectl.sweep.spec import load_spec

    spec = load_spec(spec_file)
    if executor.value != "ray" and address is not None:
        raise BadInput("--address applies to --executor ray only.")
    result = run_sweep(get_settings(), spec, executor.value, ExecutorOptions(jobs=jobs, address=address), say=_say)
    console.print(f"sweep {result.sweep_id}: all {result.finished} task(s) finished")
    typer.echo(result.sweep_id)


@app.command("resume")
def resume(
    sweep_id: int = typer.Argument(..., metavar="SWEEP_ID", min=1, max=MAX_ID),
    executor: ExecutorName = typer.Option("local", "--executor", help="local or ray."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR", help="With ray: the cluster to join."),
    jobs: int = typer.Option(1, "--jobs", metavar="K", **JOBS_RANGE, help="With local: tasks at once."),
) -> None:
    """Run every unfinished task of a sweep again (after its driver died); each resumes its runs.

    Example: slatectl sweep resume 3 --executor ray --address auto
    """
    from slatectl.sweep.driver import resume_sweep
    from slatectl.sweep.executors import ExecutorOptions

    result = resume_sweep(get_settings(), sweep_id, executor.value, ExecutorOptions(jobs=jobs, address=address), say=_say)
    console.print(f"sweep {result.sweep_id}: all {result.finished} task(s) finished")


@app.command("status")
def status(
    sweep_id: int = typer.Argument(..., metavar="SWEEP_ID", min=1, max=MAX_ID),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Each task of a sweep: state, members, step reached, latest validation returns, worker, heartbeat age.

    Example: slatectl sweep status 3 --json
    """
    with open_registry(get_settings()) as registry:
        report = sweep_status(registry, sweep_id)
    if as_json:
        print_json(report.to_dict())
        return
    console.print(status_table(report))


def status_table(report: SweepStatus) -> Table:
    table = Table(title=f"sweep {report.sweep_id}: {report.state} ({report.executor}, created {report.created_at})",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    # Names, ids and numbers stay whole; only the worker (host:pid) folds onto a second line if need be.
    for name, justify in (("task", "right"), ("agent", "left"), ("state", "left"), ("runs", "right"),
                          ("step", "right"), ("val return", "right"), ("worker", "left"), ("beat", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "worker", overflow="fold")
    for t in report.tasks:
        step = "-" if t.step is None else f"{t.step:,}/{t.steps:,}"
        returns = "-" if not t.val_returns else (f"{t.val_returns[0]:.1f}" if len(t.val_returns) == 1 else
                                                 f"{min(t.val_returns):.1f}…{max(t.val_returns):.1f}")
        beat = "-" if t.heartbeat_age_s is None or t.state in ("finished", "failed") else f"{t.heartbeat_age_s:.0f}s"
        table.add_row(str(t.position), t.agent, t.state, str(t.members), step, returns, t.worker or "-", beat)
    return table


@app.command("list")
def list_sweeps(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Every sweep, newest first, with its state and task counts.

    Example: slatectl sweep list --json
    """
    with open_registry(get_settings()) as registry:
        rows = []
        for sweep in registry.list_sweeps():
            tasks = registry.sweep_tasks(sweep.id)
            rows.append({"sweep_id": sweep.id, "state": sweep.state, "executor": sweep.executor,
                         "tasks": len(tasks), "finished": sum(t.state == "finished" for t in tasks),
                         "agents": sweep.spec["agents"], "created_at": sweep.created_at.isoformat(timespec="seconds")})
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No sweeps yet. Start one with `slatectl sweep run SPEC.yaml`.")
        return
    table = Table(title=f"{len(rows)} sweep(s)", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for name in ("sweep", "state", "executor", "tasks done", "agents", "created (UTC)"):
        table.add_column(name, no_wrap=name != "agents", overflow="fold")
    for r in rows:
        table.add_row(str(r["sweep_id"]), r["state"], r["executor"], f"{r['finished']}/{r['tasks']}",
                      ", ".join(r["agents"]), r["created_at"])
    console.print(table)
