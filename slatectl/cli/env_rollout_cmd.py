"""`slatectl env rollout ENV --policy P`: a fixed policy's episode returns (imports torch; see env_cmd)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slatectl.cli.common import (BATCH_RANGE, DEVICE_HELP, EPISODES_RANGE, PROBABILITY_RANGE, SEED_RANGE, Device, complete_env, console,
                                 err_console, get_settings, print_json)
from slatectl.device import resolve_device
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rollout import rollout
from slatectl.threads import configure_torch_threads

Policy = Enum("Policy", {name: name for name in POLICIES}, type=str)  # choices listed by --help, one source


def rollout_env(
    env: str = typer.Argument(..., metavar="ENV", help="Environment name (see `slatectl env list`), e.g. focused_topdown.", autocompletion=complete_env),
    policy: Policy = typer.Option(..., "--policy", help="Fixed policy to roll out."),
    episodes: int = typer.Option(500, "--episodes", metavar="N", **EPISODES_RANGE, help="Number of episodes (users)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", **SEED_RANGE, help="Seed of the user and click draws."),
    item_embeddings: Optional[Path] = typer.Option(None, "--item-embeddings", metavar="FILE.npy", help="1000×20 float .npy item table instead of the generated one."),
    batch: int = typer.Option(1024, "--batch", metavar="N", **BATCH_RANGE, help="Users simulated at once."),
    epsilon: float = typer.Option(0.5, "--epsilon", metavar="P", **PROBABILITY_RANGE, help="Exploration rate of eps-oracle."),
    device: Device = typer.Option(Device.AUTO, "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Roll out a fixed policy; print mean, std and SEM of the episode return and user-steps/s.

    Runs on --device (a user's trajectory is the same on every device); on the CPU with
    `slatectl --threads N` torch threads (default: all available cores).

    Example: slatectl env rollout focused_topdown --policy oracle --episodes 500 --seed 1
    """
    policy_name = policy.value
    resolved = resolve_device(device, say=lambda text: err_console.print(text, highlight=False))
    simulator = make_env(env, item_embeddings, device=resolved)
    err_console.print(f"simulating on {resolved}", highlight=False)
    configure_torch_threads(get_settings().threads)
    chosen = POLICIES[policy_name](epsilon) if policy_name == "eps-oracle" else POLICIES[policy_name]()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("return {task.fields[mean]:.2f}"), TimeElapsedColumn(),
                        console=err_console, transient=as_json)
    running = {"sum": 0.0, "n": 0}
    with progress:
        task = progress.add_task(f"{env} / {policy_name}", total=episodes, mean=0.0)

        def on_batch(done: int, returns) -> None:
            running["sum"] += float(returns.sum())
            running["n"] += returns.numel()
            progress.update(task, completed=done, mean=running["sum"] / running["n"])

        stats = rollout(simulator, chosen, episodes, seed, batch_size=batch, on_batch=on_batch)
    steps_per_s = episodes * simulator.config.episode_length / max(stats.seconds, 1e-9)
    result = {"env": env, "policy": policy_name, "episodes": episodes, "seed": seed, "device": resolved, "mean_return": stats.mean,
              "std_return": stats.std, "sem_return": stats.sem, "user_steps_per_s": steps_per_s}
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{policy_name} policy on {env} ({episodes:,} episodes, seed {seed}, {resolved})")
    for column in ("mean return", "std", "SEM", "user-steps/s"):
        table.add_column(column, justify="right")
    table.add_row(f"{stats.mean:.2f}", f"{stats.std:.2f}", f"{stats.sem:.2f}", f"{steps_per_s:,.0f}")
    console.print(table)
