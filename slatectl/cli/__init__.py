"""The `slatectl` command line: thin commands that parse, call library functions and render.

Each command group lives in its own module under slatectl/cli/ and is listed below as a lazy command
(name -> "module:attribute" and its one-line help): a module is imported only when its command runs
or its own --help is asked, so `slatectl --help`, `--version`, `env list|show` and the registry-only
commands start without importing torch or Lightning. Library errors (`slatectl.errors`) print a
one-paragraph message on stderr and exit 2 (bad input) or 1 (job failed); the mapping lives in
`slatectl.cli.group`, and a traceback is shown only with `--debug` or SLATECTL_DEBUG=1.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Optional

import typer

from slatectl import __version__
from slatectl.cli.common import set_settings
from slatectl.cli.group import LazyCommand, SlatectlGroup
from slatectl.errors import StopSignal
from slatectl.settings import MAX_THREADS, Settings

COMMANDS: dict[str, LazyCommand] = {
    "env": LazyCommand("slatectl.cli.env_cmd:app", "The six TopicRec environments: list, show, roll out a fixed policy."),
    "data": LazyCommand("slatectl.cli.pretrain_cmd:data_app", "Logged data for pretraining (ε-greedy oracle slates)."),
    "pretrain": LazyCommand("slatectl.cli.pretrain_cmd:pretrain_app", "Pretrain GeMS or MF item embeddings on an env's logged data."),
    "train": LazyCommand("slatectl.cli.train_cmd:train", "Train an agent online; checkpoints are validated and registered."),
    "ckpt": LazyCommand("slatectl.cli.ckpt_cmd:app", "Registered checkpoints: list, show, promote for a quality, promotion history."),
    "collect": LazyCommand("slatectl.cli.collect_cmd:collect", "Collect a D4RL-style dataset with a promoted checkpoint."),
    "evaluate": LazyCommand("slatectl.cli.offline_cmd:evaluate", "Score an offline-trained policy on the test users, in a dataset's spaces."),
    "relabel": LazyCommand("slatectl.cli.offline_cmd:relabel", "A dataset's transitions with another encoder's features (a new dataset)."),
    "inspect": LazyCommand("slatectl.cli.inspect_cmd:app", "The registry at a glance; a run's learning curve; a dataset's lineage."),
    "sweep": LazyCommand("slatectl.cli.sweep_cmd:app", "Sweeps: grids of training populations, locally or on a Ray cluster."),
    "registry": LazyCommand("slatectl.cli.registry_cmd:app", "The registry itself: verify its files, back it up, restore it, collect garbage."),
}


class TopLevelGroup(SlatectlGroup):
    lazy_commands = COMMANDS


app = typer.Typer(
    name="slatectl",
    help="Offline RL datasets for slate recommendation: simulate, train, register checkpoints, promote, collect.\n\n"
         "Example: slatectl env list\n\n"
         "Example: slatectl --threads 2 train sac-gems --env diffuse_topdown --save-every 50000",
    cls=TopLevelGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain one-paragraph errors on stderr (the CLI contract), not rich panels that wrap the message.
    rich_markup_mode=None,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"slatectl {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(  # --home is a str: typer's Path("") reads as "." and would hide an empty value
    home: Optional[str] = typer.Option(None, "--home", envvar="SLATECTL_HOME", metavar="DIR", help="Registry and artifact store folder [default: ./.slatectl]."),
    registry_url: Optional[str] = typer.Option(None, "--registry-url", envvar="SLATECTL_REGISTRY_URL", metavar="URL", help="SQLAlchemy URL of the registry [default: sqlite:///<home>/registry.db]."),
    threads: Optional[int] = typer.Option(
        None, "--threads", envvar="SLATECTL_THREADS", min=1, max=MAX_THREADS, metavar="N",
        help="Torch CPU threads for compute commands (train, collect, pretrain, data logged, env rollout), "
             "per process; --jobs K runs K processes [default: auto = the available cores ÷ the jobs running at once]."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    set_settings(Settings.resolve(home, registry_url, debug, threads))


def _stop_on_signal(number: int, _frame) -> None:
    raise StopSignal(signal.Signals(number).name, 128 + number)


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP stop every command the way Ctrl-C does (clean-up runs) and exit 128 + N.
    A signal the caller ignores (`nohup` ignores SIGHUP) stays ignored."""
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, _stop_on_signal)


def main() -> None:
    """Console-script entry point."""
    # Before anything imports torch (command modules load lazily, after this): OpenMP reads its wait policy
    # once, when torch loads it. PASSIVE puts idle torch threads to sleep instead of spinning against other
    # processes on a busy machine (slatectl/threads.py); a policy the user exported is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    install_stop_signals()
    app()
