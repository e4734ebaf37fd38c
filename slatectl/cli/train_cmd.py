"""`slatectl train AGENT --env ENV ...`: online training with checkpoints recorded in the registry."""

from __future__ import annotations

import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from slatectl.registry import open_registry
from slatectl.agents import AGENTS
from slatectl.cli.common import console, err_console, get_settings
from slatectl.errors import BadInput
from slatectl.settings import Settings
from slatectl.sim.config import env_names
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import TrainResult, Trainer
from slatectl.cli.train_population import parse_envs, resume_population, train_population


class RichReporter:
    """Progress bar with step, episode return, latest validation return and updates/s."""

    def __init__(self, label: str):
        self.label = label
        self.progress: Progress | None = None
        self.task = None

    def message(self, text: str) -> None:
        err_console.print(f"[dim]{self.label}[/] {text}", highlight=False)

    def start(self, total_steps: int, first_step: int) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("return {task.fields[ret]:6.1f}"), TextColumn("val {task.fields[val]}"),
            TextColumn("{task.fields[ups]:5.1f} upd/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err_console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=first_step, ret=0.0, val="—", ups=0.0)

    def advance(self, step: int, episode_return: float, val_return: float | None, updates_per_s: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, ret=episode_return,
                                 val="—" if val_return is None else f"{val_return:.1f}", ups=updates_per_s)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def render_result(result: TrainResult) -> None:
    table = Table(title=f"run {result.run_id}: checkpoints tested on fixed test users")
    for column in ("checkpoint", "step", "best", "val return", "test return", "test std", "episodes"):
        table.add_column(column, justify="right")
    for r in result.tests:
        table.add_row(str(r.checkpoint_id), f"{r.step:,}", "★" if r.best else "", f"{r.val_return:.2f}",
                      f"{r.test_mean:.2f}", f"{r.test_std:.2f}", str(r.episodes))
    console.print(table)


def _train_one(settings: Settings, agent: str, env: str, config_file: Optional[Path], overrides: list[str],
               cli_training: dict, command: str, show_progress: bool, threads: int | None = None) -> TrainResult:
    if threads:
        import torch

        torch.set_num_threads(threads)  # K runs on a few cores: avoid oversubscribing them
    config = resolve_run_config(agent, env, config_file, overrides, cli_training)
    reporter = RichReporter(f"{agent}/{env}") if show_progress else None
    with open_registry(settings) as registry:
        return Trainer(registry, config, reporter, logs_dir=settings.home / "logs").run(command=command)


def train(
    agent: str = typer.Argument(..., help=f"Agent: {' | '.join(AGENTS)}."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment, or `all` for the six one after another, or E1,E2,… (not needed with --resume)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (episodes, each followed by one update) [default: 100000]."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Save and register a checkpoint every N steps (and at the end)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed [default: 58407201]."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of overrides (sections training, agent, logged, gems, mf)."),
    overrides: list[str] = typer.Option([], "--set", help="Override one value: --set agent.gamma=0.9 (repeatable)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue run RUN_ID (or population GROUP) from its last checkpoint."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Train envs × N seeds (--seed, --seed+1, …) as one population in one process."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda [default: cpu]."),
    jobs: int = typer.Option(1, "--jobs", help="With --env all: environments trained at once."),
) -> None:
    """Train an agent online; every --save-every steps validate, save and register a checkpoint.

    Example: slatectl train sac-gems --env diffuse_topdown --save-every 50000
    """
    settings = get_settings()
    command = "slatectl " + shlex.join(sys.argv[1:])
    if resume is not None and not resume.isdigit():
        for result in resume_population(settings, resume, RichReporter(f"population {resume[:8]}")):
            render_result(result)
        return
    if resume is not None:
        with open_registry(settings) as registry:
            result = Trainer.resume(registry, int(resume), RichReporter(f"run {resume}"), logs_dir=settings.home / "logs")
        render_result(result)
        return
    if env is None:
        raise BadInput("--env is required (an environment name or `all`); see `slatectl env list`.")
    if agent not in AGENTS:
        raise BadInput(f"unknown agent {agent!r}. Known agents: {', '.join(AGENTS)}.")
    if jobs < 1:
        raise BadInput(f"--jobs must be >= 1 (got {jobs}).")
    cli_training = {"max_steps": steps, "save_every": save_every, "seed": seed, "device": device}
    if seeds is not None or "," in env:
        for result in train_population(settings, agent, parse_envs(env), seeds or 1, config_file, overrides,
                                       cli_training, command, RichReporter(f"{agent} population")):
            render_result(result)
        return
    envs = env_names() if env == "all" else [env]
    # Resolve every config first so a bad key or env fails before any work starts.
    for name in envs:
        resolve_run_config(agent, name, config_file, overrides, cli_training)
    if jobs == 1 or len(envs) == 1:
        for name in envs:
            render_result(_train_one(settings, agent, name, config_file, overrides, cli_training, command, True))
        return
    import os

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_train_one, settings, agent, name, config_file, overrides, cli_training, command, False, threads)
                   for name in envs]
        for name, future in zip(envs, futures):
            result = future.result()
            err_console.print(f"{name}: run {result.run_id} finished")
            render_result(result)
