"""`slatectl collect --quality Q`: a D4RL-style dataset from the checkpoint promoted for (env, quality)."""

from __future__ import annotations

from dataclasses import replace

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from slatectl.domain import BehaviourMode, DatasetFormat, Quality
from slatectl.registry import open_registry, require_writable
from slatectl.cli.common import (BATCH_RANGE, DEVICE_HELP, EPISODES_RANGE, SEED_RANGE, Device, complete_envs, console, err_console,
                                 get_settings, print_json)
from slatectl.device import resolve_device
from slatectl.errors import BadInput
from slatectl.collect.collector import CollectRequest, collect_datasets, parse_encoder
from slatectl.sim.config import EnvSelection, select_envs
from slatectl.threads import configure_torch_threads


def collect(
    quality: Quality = typer.Option(..., "--quality", help="Which promoted checkpoint plays (random: the uniform random policy)."),
    env: str = typer.Option("all", "--env", metavar="ENV", help="Environment, or `all`: every env with a checkpoint promoted for the quality (all six for random).", autocompletion=complete_envs),
    episodes: int = typer.Option(10_000, "--episodes", metavar="N", **EPISODES_RANGE, help="Episodes (users) to collect (10000 = 1M transitions)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", **SEED_RANGE, help="Seed of the collected users."),
    fmt: DatasetFormat = typer.Option(DatasetFormat.NPZ, "--format", help="npz (one registered file) or minari (a Minari HDF5 dataset in $MINARI_DATASETS_PATH, its file also registered)."),
    batch: int = typer.Option(5000, "--batch", metavar="N", **BATCH_RANGE, help="Users simulated at once (memory grows with it)."),
    act: BehaviourMode = typer.Option(BehaviourMode.SAMPLE, "--act", help="The checkpoint's stochastic policy as trained (sample, as D4RL's medium/expert) or its deterministic evaluation policy (greedy)."),
    encoder: str = typer.Option(None, "--encoder", metavar="ARTIFACT", help="GeMS artifact id whose features give the dataset's continuous observation and action, or `none` [default: the encoder of the env's datasets, else the run's GeMS, else the env's newest GeMS]."),
    device: Device = typer.Option(Device.AUTO, "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Collect a dataset with the checkpoint promoted for (env, quality); the last stdout line is its id.

    Every dataset of an env has the same spaces: the slate and clicks, plus the features of the env's one
    encoder (a registered GeMS); docs/offline.md.

    The agent and the simulator run on --device; on the CPU torch uses `slatectl --threads N` threads
    (default: all available cores), and with N >= 2 N batches of at least 2000 users are simulated at
    once, one per thread. The same seed and --batch give the same file, whatever --threads; with --act
    greedy another --batch gives the same episodes too (docs/algorithms.md §6.3).

    Example: slatectl collect --quality medium --env diffuse_topdown --episodes 1000

    Example: slatectl collect --quality expert --env focused_topdown --format minari

    Example: slatectl collect --quality random --env focused_topdown --encoder 2 --act greedy
    """
    selection = select_envs(env, lists=False)  # an unknown env fails before the registry opens
    # the typed request, built once from the parsed options; each collected env gets a copy of it
    base = CollectRequest(selection.names[0], quality, episodes, seed, fmt, batch, act=act, encoder=parse_encoder(encoder))
    require_writable(get_settings().registry_url, get_settings().home)
    resolved = resolve_device(device, say=lambda text: err_console.print(text, highlight=False))
    configure_torch_threads(get_settings().threads)
    results = []
    with open_registry(get_settings()) as registry:
        envs = _collected_envs(registry, selection, quality)
        requests = [replace(base, env=name, device=resolved) for name in envs]
        err_console.print(f"collecting on {resolved}", highlight=False)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("return {task.fields[ret]:.1f}"), TimeElapsedColumn(),
                      console=err_console, transient=as_json) as progress:

            def on_batch_for(request: CollectRequest):
                task = progress.add_task(f"{request.env}/{request.quality}", total=episodes, ret=0.0)
                return lambda done, ret: progress.update(task, completed=done, ret=ret)

            # The next env simulates while the previous env's file is written (collect_datasets).
            for dataset in collect_datasets(registry, requests, on_batch_for):
                results.append({"id": dataset.id, "env": dataset.env, "quality": dataset.quality,
                                "checkpoint_id": dataset.checkpoint_id, "episodes": dataset.episodes,
                                "transitions": dataset.transitions, "mean_return": dataset.return_mean, "device": resolved,
                                "path": str(registry.store.path_for(dataset.storage_key)), "format": dataset.format,
                                "minari_dataset_id": (dataset.meta.get("minari") or {}).get("dataset_id"),
                                "behaviour": dataset.meta.get("behaviour"),
                                "encoder_id": (dataset.meta.get("encoder") or {}).get("artifact_id")})
    if as_json:
        print_json(results)
        return
    for r in results:
        source = "the random policy" if r["checkpoint_id"] is None else f"checkpoint {r['checkpoint_id']}"
        console.print(f"dataset {r['id']}: {r['env']} / {r['quality']}, {r['episodes']:,} episodes, "
                      f"{r['transitions']:,} transitions, mean return {r['mean_return']:.2f} ({source})")
        console.print(f"  behaviour: {r['behaviour']} policy; features: "
                      + (f"GeMS encoder {r['encoder_id']}" if r["encoder_id"] is not None else "none (ids and clicks only)"),
                      highlight=False)
        if r["minari_dataset_id"]:
            console.print(f"  Minari: minari.load_dataset({r['minari_dataset_id']!r})")
    # The command contract: the last stdout line is the new dataset's id, for scripts
    # (`id=$(slatectl collect … | tail -n 1)`); the sentences above name it for people.
    typer.echo(results[-1]["id"])


def _collected_envs(registry, selection: EnvSelection, quality: Quality) -> list[str]:
    """The envs to collect: the one named (its promotion checked before any progress bar or work), or with
    `all` every env (random) or every env with a checkpoint promoted for the quality."""
    if not selection.every:
        if quality != Quality.RANDOM:
            for name in selection.names:
                registry.promoted_checkpoint(name, quality)
        return list(selection.names)
    if quality == Quality.RANDOM:
        return list(selection.names)
    envs = [name for name in selection.names if registry.active_promotion(name, quality) is not None]
    if not envs:
        raise BadInput(f"no checkpoint is promoted as {quality} for any environment; choose one with "
                       f"`slatectl ckpt promote --quality {quality} --env ENV`.")
    return envs
