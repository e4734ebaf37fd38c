"""`slatectl env ...`: list, show and roll out the TopicRec environments."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slatectl.cli.common import console, err_console, print_json
from slatectl.errors import BadInput
from slatectl.sim.config import env_names, load_env_config
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rollout import rollout

app = typer.Typer(help="The six TopicRec environments: list, show, roll out a fixed policy.", no_args_is_help=True)


@app.command("list")
def list_envs(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List the environments and their parameters.

    Example: slatectl env list --json
    """
    configs = [load_env_config(name) for name in env_names()]
    if as_json:
        print_json([c.to_dict() for c in configs])
        return
    table = Table(title="TopicRec environments")
    for column in ("env", "item embeddings", "click model", "diversity penalty", "offset", "slope", "omega", "boredom thr."):
        table.add_column(column)
    for c in configs:
        table.add_row(c.name, c.item_embeddings, c.click_model, f"{c.diversity_penalty:g}", f"{c.offset:g}",
                      f"{c.slope:g}", f"{c.omega:g}", str(c.boredom_threshold))
    console.print(table)


@app.command("show")
def show_env(env: str = typer.Argument(..., help="Environment name, e.g. focused_topdown."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Show every parameter of one environment.

    Example: slatectl env show diffuse_divpen
    """
    config = load_env_config(env)
    if as_json:
        print_json(config.to_dict())
        return
    table = Table(title=f"environment {config.name}", show_header=False)
    for key, value in config.to_dict().items():
        table.add_row(key, str(value))
    console.print(table)


@app.command("rollout")
def rollout_env(
    env: str = typer.Argument(..., help="Environment name, e.g. focused_topdown."),
    policy: str = typer.Option(..., "--policy", help="random | oracle | eps-oracle"),
    episodes: int = typer.Option(500, "--episodes", help="Number of episodes (users)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the user and click draws."),
    item_embeddings: Optional[Path] = typer.Option(None, "--item-embeddings", help="N×D .npy item table instead of the generated one."),
    batch: int = typer.Option(1024, "--batch", help="Users simulated at once."),
    epsilon: float = typer.Option(0.5, "--epsilon", help="Exploration rate of eps-oracle."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Roll out a fixed policy; print mean, std and SEM of the episode return and user-steps/s.

    Example: slatectl env rollout focused_topdown --policy oracle --episodes 500 --seed 1
    """
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}.")
    if episodes < 1:
        raise BadInput(f"--episodes must be >= 1 (got {episodes}).")
    if batch < 1:
        raise BadInput(f"--batch must be >= 1 (got {batch}).")
    if not 0.0 <= epsilon <= 1.0:
        raise BadInput(f"--epsilon must lie in [0, 1] (got {epsilon}).")
    simulator = make_env(env, item_embeddings)
    chosen = POLICIES[policy](epsilon) if policy == "eps-oracle" else POLICIES[policy]()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("return {task.fields[mean]:.2f}"), TimeElapsedColumn(),
                        console=err_console, transient=as_json)
    running = {"sum": 0.0, "n": 0}
    with progress:
        task = progress.add_task(f"{env} / {policy}", total=episodes, mean=0.0)

        def on_batch(done: int, returns) -> None:
            running["sum"] += float(returns.sum())
            running["n"] += returns.numel()
            progress.update(task, completed=done, mean=running["sum"] / running["n"])

        stats = rollout(simulator, chosen, episodes, seed, batch_size=batch, on_batch=on_batch)
    steps_per_s = episodes * simulator.config.episode_length / max(stats.seconds, 1e-9)
    result = {"env": env, "policy": policy, "episodes": episodes, "seed": seed, "mean_return": stats.mean,
              "std_return": stats.std, "sem_return": stats.sem, "user_steps_per_s": steps_per_s}
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{policy} policy on {env} ({episodes} episodes, seed {seed})")
    for column in ("mean return", "std", "SEM", "user-steps/s"):
        table.add_column(column, justify="right")
    table.add_row(f"{stats.mean:.2f}", f"{stats.std:.2f}", f"{stats.sem:.2f}", f"{steps_per_s:,.0f}")
    console.print(table)
