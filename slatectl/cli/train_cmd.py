"""`slatectl train AGENT --env ENV ...`: online training with checkpoints recorded in the registry."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from slatectl.agents import trainable_agents
from slatectl.cli.common import console, err_console, get_settings
from slatectl.errors import BadInput
from slatectl.train.loop import TrainResult
from slatectl.train.orchestration import resolve_run_configs, resume_run, train_runs
from slatectl.train.progress import make_reporter


def render_result(result: TrainResult) -> None:
    table = Table(title=f"run {result.run_id}: checkpoints tested on fixed test users")
    for column in ("checkpoint", "step", "best", "val return", "test return", "test std", "episodes"):
        table.add_column(column, justify="right")
    for r in result.tests:
        table.add_row(str(r.checkpoint_id), f"{r.step:,}", "★" if r.best else "", f"{r.val_return:.2f}",
                      f"{r.test_mean:.2f}", f"{r.test_std:.2f}", str(r.episodes))
    console.print(table)


def train(
    agent: str = typer.Argument(..., help=f"Agent: {' | '.join(trainable_agents())}."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment, or `all` for the six one after another (not needed with --resume)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (episodes, each followed by one update) [default: 100000]."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Save and register a checkpoint every N steps (and at the end)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed [default: 58407201]."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of overrides (sections training, agent, logged, gems, mf)."),
    overrides: list[str] = typer.Option([], "--set", help="Override one value: --set agent.gamma=0.9 (repeatable)."),
    resume: Optional[int] = typer.Option(None, "--resume", help="Continue run RUN_ID from its last checkpoint."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda [default: cpu]."),
    jobs: int = typer.Option(1, "--jobs", help="With --env all: environments trained at once."),
    keep_resume: Optional[int] = typer.Option(None, "--keep-resume", help="Resume states kept per run; older ones are deleted [default: 1]."),
) -> None:
    """Train an agent online; every --save-every steps validate, save and register a checkpoint.

    Example: slatectl train sac-gems --env diffuse_topdown --save-every 50000
    """
    settings = get_settings()
    if resume is not None:
        render_result(resume_run(settings, resume, make_reporter(f"run {resume}", err_console)))
        return
    if env is None:
        raise BadInput("--env is required (an environment name or `all`); see `slatectl env list`.")
    cli_training = {"max_steps": steps, "save_every": save_every, "seed": seed, "device": device,
                    "keep_resume": keep_resume}
    configs = resolve_run_configs(agent, env, config_file, overrides, cli_training)
    command = "slatectl " + shlex.join(sys.argv[1:])
    for result in train_runs(settings, configs, command, jobs, reporter_for=lambda label: make_reporter(label, err_console)):
        if jobs > 1:
            err_console.print(f"run {result.run_id} finished")
        render_result(result)
