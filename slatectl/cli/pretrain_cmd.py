"""`slatectl data logged` and `slatectl pretrain gems|mf`: the registered inputs of the agents."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from slatectl.registry import open_registry, require_writable
from slatectl.cli.common import (DEVICE_HELP, EPISODES_RANGE, PROBABILITY_RANGE, SEED_RANGE, Device, complete_env, complete_envs, console, err_console,
                                 get_settings)
from slatectl.device import resolve_device
from slatectl.config_tools import apply_overrides, build_config
from slatectl.pretrain.gems_train import GeMSConfig
from slatectl.pretrain.logged import LoggedDataConfig
from slatectl.pretrain.mf import MFConfig
from slatectl.sim.config import select_envs
from slatectl.sim.factory import make_env
from slatectl.threads import configure_torch_threads
from slatectl.train import inputs as pretrained
from slatectl.train.config import MF_SEED, TrainingConfig, pretrain_defaults

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)
pretrain_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)


@data_app.callback()
def _data_group() -> None:
    """Logged data for pretraining (ε-greedy oracle slates).

    Example: slatectl data logged --env focused_topdown --episodes 100000
    """


@pretrain_app.callback()
def _pretrain_group() -> None:
    """Pretrain GeMS or MF item embeddings on an env's logged data.

    Example: slatectl pretrain gems --env diffuse_topdown --set max_epochs=10
    """


def _section(name: str, overrides: list[str]) -> dict:
    base = pretrain_defaults()[name]
    return apply_overrides({name: base}, [o if o.startswith(name + ".") else f"{name}.{o}" for o in overrides])[name]


def _say(text: str) -> None:
    err_console.print(text, highlight=False)


def _check_logged_overrides(overrides: list[str]) -> None:
    """Validate `logged.*` overrides before any work (they are applied again when the data is built)."""
    build_config(LoggedDataConfig, _section("logged", overrides), "logged.")


def _logged(registry, env, episodes: Optional[int], seed: Optional[int], overrides: list[str]):
    section = _section("logged", overrides)
    if episodes is not None:
        section["episodes"] = episodes
    if seed is not None:
        section["seed"] = seed
    config = build_config(LoggedDataConfig, section, "logged.")
    with Progress(TextColumn("[bold]logged data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("logged", total=config.episodes)
        return pretrained.ensure_logged_data(registry, env, config, say=_say,
                                             on_batch=lambda done: progress.update(task, completed=done))


@data_app.command("logged")
def logged(
    env: str = typer.Option(..., "--env", metavar="ENV", help="Environment name (see `slatectl env list`).", autocompletion=complete_env),
    episodes: Optional[int] = typer.Option(None, "--episodes", metavar="N", min=2, max=EPISODES_RANGE["max"], help="Episodes to log [default: 100000]."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED", **SEED_RANGE, help="Seed of the logging policy and users [default: 2754851]."),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", metavar="P", **PROBABILITY_RANGE, help="Per-position random-item probability [default: 0.5]."),
    device: Device = typer.Option(Device.AUTO, "--device", help=DEVICE_HELP),
) -> None:
    """Generate (or find) the env's logged slates and register them; prints the artifact id.

    Simulated on --device (the same slates on every device); on the CPU torch uses
    `slatectl --threads N` threads (default: all available cores).

    Example: slatectl data logged --env focused_topdown --episodes 100000
    """
    resolved = resolve_device(device, say=_say)
    simulator = make_env(env, device=resolved)
    _say(f"simulating on {resolved}")
    require_writable(get_settings().registry_url, get_settings().home)
    configure_torch_threads(get_settings().threads)
    with open_registry(get_settings()) as registry:
        artifact = _logged(registry, simulator, episodes, seed, [f"epsilon={epsilon}"] if epsilon is not None else [])
    mean_return = artifact.metrics.get("mean_return")
    summary = "" if mean_return is None else f" (mean return {mean_return:.1f})"
    console.print(f"logged data for {env}: artifact {artifact.id}{summary}")
    typer.echo(artifact.id)


@pretrain_app.command("gems")
def pretrain_gems(
    env: str = typer.Option(..., "--env", metavar="ENV", help="Environment name (see `slatectl env list`), `all`, or a comma-separated list: several envs train as one stacked population.", autocompletion=complete_envs),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED", **SEED_RANGE, help="GeMS seed (of every env) [default: the training seed 58407201]."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a GeMS value: --set max_epochs=5 (or logged.episodes=…); repeatable."),
    device: Device = typer.Option(Device.AUTO, "--device", help=DEVICE_HELP + " (`--set accelerator=…` overrides it.)"),
) -> None:
    """Pretrain the GeMS slate VAE on the env's logged data (built if missing); prints the artifact id.

    With `--env all` (or E1,E2,…) every env's GeMS is found or pretrained: the missing ones train
    together as one stacked population (each member is its solo run up to float rounding, with the
    solo run's cache key: an existing GeMS is reused either way); prints one artifact id per env.
    Torch uses `slatectl --threads N` CPU threads (default: all available cores). On CUDA a single
    env's training step is replayed from a CUDA graph (SLATECTL_GEMS_CUDA_GRAPH=0 runs it eagerly; a
    stack runs eagerly).
    The device is part of the artifact's config: a GeMS pretrained on CUDA is not reused by a CPU run,
    and vice versa.

    Example: slatectl pretrain gems --env diffuse_topdown --set max_epochs=10
    Example: slatectl pretrain gems --env all
    """
    selection = select_envs(env)  # an unknown env fails here, before any work
    resolved = resolve_device(device, say=_say)
    # missing logged data is simulated on the same device
    simulators = [make_env(name, device=resolved) for name in selection.names]
    gems_overrides = [o for o in overrides if not o.startswith("logged.")]
    logged_overrides = [o for o in overrides if o.startswith("logged.")]
    config = build_config(GeMSConfig, _section("gems", [f"accelerator={resolved}", *gems_overrides]), "gems.")
    resolve_device(config.accelerator)  # `--set accelerator=cuda` without a GPU: exit 2 before any work
    _check_logged_overrides(logged_overrides)
    seed = TrainingConfig().seed if seed is None else seed
    require_writable(get_settings().registry_url, get_settings().home)
    configure_torch_threads(get_settings().threads)
    with open_registry(get_settings()) as registry:
        logged_artifacts = [_logged(registry, simulator, None, None, logged_overrides) for simulator in simulators]
        if not selection.several:
            artifacts = [pretrained.ensure_gems(registry, simulators[0], logged_artifacts[0], config, seed, say=_say)]
        else:
            requests = [pretrained.GeMSRequest(simulator, logged, config, seed)
                        for simulator, logged in zip(simulators, logged_artifacts)]
            artifacts = pretrained.ensure_gems_population(registry, requests, say=_say)
    for simulator, artifact in zip(simulators, artifacts):
        console.print(f"GeMS for {simulator.config.name} ({config.accelerator}): artifact {artifact.id}")
        typer.echo(artifact.id)


@pretrain_app.command("mf")
def pretrain_mf(
    env: str = typer.Option(..., "--env", metavar="ENV", help="Environment name (see `slatectl env list`).", autocompletion=complete_env),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="SEED", **SEED_RANGE, help=f"MF seed [default: {MF_SEED}]."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override an MF value: --set patience=5 (or logged.episodes=…); repeatable."),
    device: Device = typer.Option(Device.AUTO, "--device", help=DEVICE_HELP),
) -> None:
    """Pretrain BPR matrix-factorisation item embeddings on the env's logged data; prints the artifact id.

    Torch uses `slatectl --threads N` CPU threads (default: all available cores).

    Example: slatectl pretrain mf --env focused_mix
    """
    resolved = resolve_device(device, say=_say)
    simulator = make_env(env, device=resolved)  # missing logged data is simulated on the same device
    mf_overrides = [o for o in overrides if not o.startswith("logged.")]
    logged_overrides = [o for o in overrides if o.startswith("logged.")]
    config = build_config(MFConfig, _section("mf", mf_overrides), "mf.")
    _check_logged_overrides(logged_overrides)
    require_writable(get_settings().registry_url, get_settings().home)
    configure_torch_threads(get_settings().threads)
    with open_registry(get_settings()) as registry:
        logged_artifact = _logged(registry, simulator, None, None, logged_overrides)
        artifact = pretrained.ensure_mf(registry, simulator, logged_artifact, config, MF_SEED if seed is None else seed,
                                        say=_say, device=resolved)
    console.print(f"MF embeddings for {env} ({resolved}): artifact {artifact.id}")
    typer.echo(artifact.id)
