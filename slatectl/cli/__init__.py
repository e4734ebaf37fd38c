"""The `slatectl` command line: thin commands that parse, call library functions and render.

Each command group lives in its own module and is mounted here. Library errors (`slatectl.errors`)
print a one-paragraph message on stderr and exit 2 (bad input) or 1 (job failed); the mapping lives in
`slatectl.cli.group`, and a traceback is shown only with `--debug` or SLATECTL_DEBUG=1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slatectl import __version__
from slatectl.cli import env_cmd, collect_cmd, pretrain_cmd, train_cmd
from slatectl.cli import ckpt_cmd, inspect_cmd, registry_cmd  # registry commands
from slatectl.cli.common import set_settings
from slatectl.cli.group import SlatectlGroup
from slatectl.settings import Settings

app = typer.Typer(
    name="slatectl",
    help="Offline RL datasets for slate recommendation: simulate, train, register checkpoints, promote, collect.",
    cls=SlatectlGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain one-paragraph errors on stderr (the CLI contract), not rich panels that wrap the message.
    rich_markup_mode=None,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"slatectl {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    home: Optional[Path] = typer.Option(None, "--home", envvar="SLATECTL_HOME", help="Registry and artifact store folder [default: ./.slatectl]."),
    registry_url: Optional[str] = typer.Option(None, "--registry-url", envvar="SLATECTL_REGISTRY_URL", help="SQLAlchemy URL of the registry [default: sqlite:///<home>/registry.db]."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    set_settings(Settings.resolve(home, registry_url, debug))


app.add_typer(env_cmd.app, name="env")
app.add_typer(ckpt_cmd.app, name="ckpt")
app.add_typer(inspect_cmd.app, name="inspect")
app.add_typer(registry_cmd.app, name="registry")
app.add_typer(pretrain_cmd.data_app, name="data")
app.add_typer(pretrain_cmd.pretrain_app, name="pretrain")
app.command("train")(train_cmd.train)
app.command("collect")(collect_cmd.collect)

# One line per command group; each group lives in its own module under slatectl/cli/.


def main() -> None:
    """Console-script entry point."""
    app()
