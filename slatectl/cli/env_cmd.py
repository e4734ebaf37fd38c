"""`slatectl env ...`: list, show and roll out the TopicRec environments.

`list` and `show` only read the YAML configs (no torch); `rollout` runs the simulator and lives in
`env_rollout_cmd`, imported only when it runs, so listing environments starts instantly.
"""

from __future__ import annotations

import typer
from rich.table import Table

from slatectl.cli.common import complete_env, console, print_json
from slatectl.cli.formatting import WRAP, compact_table, format_field, format_value
from slatectl.cli.group import LazyCommand, SlatectlGroup
from slatectl.sim.config import env_names, load_env_config


class EnvGroup(SlatectlGroup):
    lazy_commands = {
        "rollout": LazyCommand("slatectl.cli.env_rollout_cmd:rollout_env",
                               "Roll out a fixed policy; print the episode return's mean, std, SEM and speed."),
    }


app = typer.Typer(cls=EnvGroup, no_args_is_help=True, rich_markup_mode=None)


@app.callback()
def _group() -> None:
    """The six TopicRec environments: list, show, roll out a fixed policy.

    Example: slatectl env list
    """


@app.command("list")
def list_envs(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List the environments and their parameters.

    Example: slatectl env list --json
    """
    configs = [load_env_config(name) for name in env_names()]
    if as_json:
        print_json([c.to_dict() for c in configs])
        return
    columns = [("env", "left"), ("item embeddings", "left"), ("click model", "left"), ("diversity penalty", "right"),
               ("offset", "right"), ("slope", "right"), ("omega", "right"), ("boredom thr.", "right")]
    rows = [[c.name, c.item_embeddings, c.click_model, f"{c.diversity_penalty:g}", f"{c.offset:g}", f"{c.slope:g}",
             f"{c.omega:g}", str(c.boredom_threshold)] for c in configs]
    # Multi-word headers wrap before any value is touched: the env names stay whole.
    table = compact_table("TopicRec environments", columns, rows, width=console.width,
                          give_way=[(name, WRAP) for name, _ in columns if " " in name])
    console.print(table)


@app.command("show")
def show_env(env: str = typer.Argument(..., metavar="ENV", help="Environment name (see `slatectl env list`), e.g. focused_topdown.", autocompletion=complete_env),
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
        table.add_row(key, format_field(key, value))
    console.print(table)
