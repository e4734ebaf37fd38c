"""`slatectl train AGENT --env ENV ...`: online training with checkpoints recorded in the registry."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from slatectl.agents import trainable_agents
from slatectl.cli.common import (JOBS_RANGE, SEEDS_RANGE, STEPS_RANGE, TRAIN_SEED_RANGE, DEVICE_HELP, Device, complete_envs, console, err_console,
                                 get_settings)
from slatectl.cli.formatting import DROP, compact_table
from slatectl.device import resolve_device
from slatectl.errors import BadInput
from slatectl.harness import PRECISIONS
from slatectl.registry import explain_untrained_ahead, require_writable, untrained_ahead
from slatectl.threads import configure_torch_threads
from slatectl.train.loop import TrainResult
from slatectl.train.orchestration import resolve_run_configs, resume_training, train_population, train_runs
from slatectl.sim.config import select_envs
from slatectl.train.progress import make_reporter


Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)
AgentName = Enum("AgentName", {name: name for name in trainable_agents()}, type=str)  # --help lists them


def render_result(result: TrainResult) -> None:
    untrained = {c.id for c in result.checkpoints if c.trained is False}
    columns = [("checkpoint", "right"), ("step", "right"), ("best", "right"), ("val return", "right"),
               ("test return", "right"), ("test std", "right"), ("episodes", "right"), ("", "left")]
    rows = [[str(r.checkpoint_id), f"{r.step:,}", "★" if r.best else "", f"{r.val_return:.2f}", f"{r.test_mean:.2f}",
             f"{r.test_std:.2f}", f"{r.episodes:,}", "untrained" if r.checkpoint_id in untrained else ""]
            for r in result.tests]
    console.print(compact_table(f"run {result.run_id}: checkpoints tested on fixed test users", columns, rows,
                                give_way=(("episodes", DROP), ("test std", DROP)), width=console.width,
                                elsewhere=f"`slatectl inspect run {result.run_id}` lists every checkpoint"))
    ahead = untrained_ahead(result.checkpoints)
    if ahead is not None:
        console.print(f"Note: {explain_untrained_ahead(*ahead)}", highlight=False)


def train(
    agent: Optional[AgentName] = typer.Argument(None, metavar="AGENT", show_default=False, help="Agent to train (not needed with --resume)."),
    env: Optional[str] = typer.Option(None, "--env", metavar="ENV", help="Environment (see `slatectl env list`), `all` for the six, or E1,E2,… (a list trains a population); not needed with --resume.", autocompletion=complete_envs),
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N", **STEPS_RANGE, help="Training steps (episodes, each followed by one update) [default: 100000]."),
    save_every: Optional[int] = typer.Option(None, "--save-every", metavar="N", **STEPS_RANGE, help="Save and register a checkpoint every N steps (and at the end)."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED", **TRAIN_SEED_RANGE, help="Training seed [default: 58407201]."),
    config_file: Optional[Path] = typer.Option(None, "--config", metavar="FILE.yaml", help="YAML file of overrides (sections training, agent, logged, gems, mf)."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override one config value, e.g. --set agent.gamma=0.9 (repeatable)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", metavar="N", **SEEDS_RANGE, help="Train a population: every env × N seeds (--seed, --seed+1, …) in one process, in lockstep."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID|GROUP", help="Continue run RUN_ID, or every member of population GROUP, from its last checkpoint."),
    device: Optional[Device] = typer.Option(None, "--device", help=DEVICE_HELP + " GeMS that the run pretrains for itself is pretrained there too. [default: training.device, auto]"),
    jobs: int = typer.Option(1, "--jobs", metavar="K", **JOBS_RANGE, help="With --env all: environments trained at once (each process with --threads torch threads); not with a population."),
    precision: Optional[Precision] = typer.Option(None, "--precision", help="Precision of the agent's updates (Lightning Fabric): 32; bf16-mixed is refused until the stacked kernels take autocast [default: training.precision, 32]."),
    keep_resume: Optional[int] = typer.Option(None, "--keep-resume", metavar="K", min=1, max=1000, help="Resume states kept per run; older ones are deleted [default: 1]."),
) -> None:
    """Train an agent online; every --save-every steps validate, save and register a checkpoint.

    Metrics go to <home>/logs as CSV, and as TensorBoard event files when TensorBoard is installed
    (pip install "slatectl[tensorboard]"; view with tensorboard --logdir <home>/logs/tensorboard).
    Each training process uses `slatectl --threads N` torch CPU threads (default: the cores ÷ --jobs).

    Example: slatectl train sac-gems --env diffuse_topdown --save-every 50000

    Example: slatectl --threads 2 train slateq --env all --jobs 2 --steps 20000 --set agent.gamma=0.9

    Example: slatectl train sac-gems --env all --seeds 10 --device cuda

    Example: slatectl train sac-gems --resume pop-3f2a9c81d0e4
    """
    settings = get_settings()
    require_writable(settings.registry_url, settings.home)
    if resume is not None:
        _check_resume_request(resume, {"--env": env, "--steps": steps, "--save-every": save_every, "--seed": seed,
                                       "--config": config_file, "--set": overrides or None, "--seeds": seeds,
                                       "--device": device, "--jobs": None if jobs == 1 else jobs,
                                       "--keep-resume": keep_resume, "--precision": precision})
        configure_torch_threads(settings.threads)
        target = _run_id(resume) if resume.isdigit() else resume
        label = f"run {resume}" if resume.isdigit() else f"population {resume}"
        for result in resume_training(settings, target, make_reporter(label, err_console)):
            render_result(result)
        return
    if agent is None:
        raise BadInput("give the AGENT to train (see `slatectl train --help`), or --resume RUN_ID|GROUP.")
    agent = agent.value
    if env is None:
        raise BadInput("--env is required (an environment name or `all`); see `slatectl env list`.")
    selection = select_envs(env)
    population = seeds is not None or selection.listed  # `--seeds N` or E1,E2,… asks for a population
    if population and jobs > 1:
        raise BadInput("--jobs does not apply to a population (--seeds or --env E1,E2,…): its members already "
                       "train together in one process; leave --jobs out.")
    resolved_device = None if device is None else resolve_device(device, say=lambda text: err_console.print(text, highlight=False))
    cli_training = {"max_steps": steps, "save_every": save_every, "seed": seed, "device": resolved_device,
                    "keep_resume": keep_resume, "precision": None if precision is None else precision.value}
    command = "slatectl " + shlex.join(sys.argv[1:])
    if population:
        configure_torch_threads(settings.threads)
        for result in train_population(settings, agent, selection.names, seeds or 1, config_file, overrides, cli_training,
                                       command, make_reporter(f"{agent} population", err_console)):
            render_result(result)
        return
    configs = resolve_run_configs(agent, selection.names, config_file, overrides, cli_training)
    for result in train_runs(settings, configs, command, jobs, reporter_for=lambda label: make_reporter(label, err_console)):
        if jobs > 1:
            err_console.print(f"run {result.run_id} finished")
        render_result(result)


def _check_resume_request(resume: str, options: dict[str, object]) -> None:
    """--resume continues a run exactly as it was recorded: an empty id, or options that would change the
    run (ignored before), are bad input instead of being silently dropped."""
    if not resume.strip():
        raise BadInput("--resume needs a run id or a population group id (got an empty value); "
                       "`slatectl inspect` lists the runs.")
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise BadInput(f"--resume continues a run with its recorded settings and does not take {', '.join(given)}; "
                       "leave them out (a resumed run keeps its steps, seed, device, precision and --keep-resume).")


def _run_id(text: str) -> int:
    run_id = int(text)
    if not 1 <= run_id <= 2**63 - 1:
        raise BadInput(f"--resume takes a run id (1 … 2^63−1) or a population group id (got {text!r}).")
    return run_id
