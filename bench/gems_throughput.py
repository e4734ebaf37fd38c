"""GeMS pretraining throughput: optimiser steps (batches of 256 slates) per second of `train_gems`.

Usage: python bench/gems_throughput.py [--device cpu|cuda] [--quick] [--episodes E] [--epochs N]
       [--no-cuda-graph] [--threads N] [--stacked K] [--engine lightning|loop] [--ab] [--against REV]

Runs `train_gems` itself (the code `slatectl pretrain gems` runs) on synthetic logged episodes of the
reference shape (100 slates of 10 items per episode, 1,000 items) with the reference settings (batch 256,
Adam 1e-3); the first epoch is the warm-up (and, on CUDA, the graph capture), the later ones are timed.
An epoch's time is read when its loss is reported, which waits for the device, so asynchronous CUDA work
is counted. The validation part is kept small (1 %) so that the figure is the training step's.
Prints a Markdown table; `--quick` shrinks the data to a few seconds of work on a CPU.

`--engine` picks how `train_gems` runs its epochs (default: its default, the Lightning Trainer). `--ab`
is the one-run A/B of the two engines: in one process, loop, lightning, lightning, loop (ABBA, so that a
drift of the machine's speed hits both alike) on the same data and seed, each timed per epoch after its
warm-up epoch; it prints the median batches/s of each engine and their ratio (and checks that both gave
the same weights).

`--stacked K` measures, in one process, K members (synthetic logs of their own, seeds 0…K−1) trained
as K solo `train_gems` runs one after another and as one stacked population (`train_stacked_gems`,
what `slatectl pretrain gems --env all` runs), and prints both rates in member batches per second and
their ratio. On cuda both replay their CUDA graph (eager with --no-cuda-graph).

`--against REV` is the one-run A/B of this checkout against an older commit (its `slatectl/` unpacked
by `git archive` into a temporary folder): the same pretraining, `train_gems` (or, with `--stacked K`,
one stack of K), run in fresh processes in the order old, new, new, old (ABBA), each timed over its
epochs 2…N; it prints each side's median member batches/s (wall and per CPU-second) and the ratio.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from slatectl.pretrain.gems_train import GeMSConfig, train_gems

try:  # the stacked population's home before the GeMS fit was written once (`--against` an older commit)
    from slatectl.pretrain.gems_population import GeMSMember, train_stacked_gems
except ImportError:
    from slatectl.pretrain.gems_train import GeMSMember, train_stacked_gems

EPISODE_LENGTH, SLATE_SIZE, NUM_ITEMS = 100, 10, 1000
DEFAULT_EPISODES = {"cpu": 1_000, "cuda": 40_000}  # 99k / 3.96M training slates: ~8 s per epoch each
QUICK_EPISODES = 120


def synthetic_logged(episodes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logged-data shaped episodes: item ids and clicks drawn at random (the cost does not depend on them)."""
    generator = torch.Generator().manual_seed(seed)
    slates = torch.randint(NUM_ITEMS, (episodes, EPISODE_LENGTH, SLATE_SIZE), generator=generator, dtype=torch.int64)
    clicks = (torch.rand(episodes, EPISODE_LENGTH, SLATE_SIZE, generator=generator) < 0.1).to(torch.uint8)
    return slates.to(torch.int16), clicks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPISODES} episodes, 2 epochs (a smoke run)")
    parser.add_argument("--episodes", type=int, default=None, help="logged episodes (default: 1,000 on cpu, 40,000 on cuda)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs, the first one untimed (default 3; 2 with --quick)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="on cuda: the eager step instead of the captured one")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--engine", choices=("lightning", "loop"), default=None, help="train_gems's engine (default: its default)")
    parser.add_argument("--ab", action="store_true", help="A/B of the loop and Lightning engines in one process (ABBA)")
    parser.add_argument("--stacked", type=int, default=None, metavar="K",
                        help="compare K stacked members with K solo runs (member batches/s and the ratio)")
    parser.add_argument("--against", default=None, metavar="REV", help="A/B of this checkout against commit REV (ABBA)")
    parser.add_argument("--child", choices=("solo", "stacked"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    episodes = args.episodes or (QUICK_EPISODES if args.quick else DEFAULT_EPISODES[args.device])
    epochs = args.epochs or (2 if args.quick else 3)
    if epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is the untimed warm-up)")
    if args.child is not None:
        timed_child(args.child, args.stacked or 1, episodes, epochs, args.device, not args.no_cuda_graph)
        return
    if args.against is not None:
        compare_commits(args.against, sys.argv[1:], episodes, epochs, args.stacked)
        return
    if args.stacked is not None:
        if args.stacked < 1:
            parser.error("--stacked must be >= 1")
        compare_stacked(args.stacked, episodes, epochs, args.device, not args.no_cuda_graph)
        return
    if args.ab:
        compare_engines(episodes, epochs, args.device, not args.no_cuda_graph)
        return
    slates, clicks = synthetic_logged(episodes)
    config = GeMSConfig(max_epochs=epochs, val_fraction=0.01, accelerator=args.device)
    options = {}
    if args.engine is not None:
        options["engine"] = args.engine
    if "cuda_graph" in inspect.signature(train_gems).parameters:  # older versions had no switch
        options["cuda_graph"] = not args.no_cuda_graph
    epoch_ends: list[float] = []
    started = time.perf_counter()
    _, metrics = train_gems(slates, clicks, config, seed=0, progress_callback=lambda row: epoch_ends.append(time.perf_counter()),
                            **options)
    total = time.perf_counter() - started
    per_epoch = -(-metrics["n_train_slates"] // config.batch_size)
    timed = (epoch_ends[-1] - epoch_ends[0]) / (len(epoch_ends) - 1)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"device: {args.device} ({device_name}), {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{episodes:,} episodes = {metrics['n_train_slates']:,} training slates, {per_epoch:,} batches of "
          f"{config.batch_size} per epoch, {epochs} epochs ({total:.1f} s in all)")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| GeMS batches/s (batch {config.batch_size}, epochs 2–{epochs}) | {per_epoch / timed:,.1f} |")
    print(f"| first epoch (warm-up{', capture' if args.device == 'cuda' else ''}) s | {epoch_ends[0] - started:.2f} |")
    print(f"| training step replayed from a CUDA graph | {'yes' if metrics.get('cuda_graph') else 'no'} |")
    print(f"| reference size (527k batches) at this rate, min | {527_000 / (per_epoch / timed) / 60:,.1f} |")


def _timed_rate(epoch_ends: list[float], batches_per_epoch: int) -> float:
    """Batches per second over epochs 2…: the first epoch is the warm-up."""
    return batches_per_epoch * (len(epoch_ends) - 1) / (epoch_ends[-1] - epoch_ends[0])


def compare_engines(episodes: int, epochs: int, device: str, cuda_graph: bool) -> None:
    """The loop and the Lightning engine on the same data and seed, ABBA in one process (module docstring)."""
    slates, clicks = synthetic_logged(episodes)
    config = GeMSConfig(max_epochs=epochs, val_fraction=0.01, accelerator=device)
    rates: dict[str, list[float]] = {"loop": [], "lightning": []}
    cpu_rates: dict[str, list[float]] = {"loop": [], "lightning": []}
    weights: dict[str, dict[str, torch.Tensor]] = {}
    per_epoch = 0
    for engine in ("loop", "lightning", "lightning", "loop"):
        ends: list[tuple[float, float]] = []
        model, metrics = train_gems(slates, clicks, config, seed=0, cuda_graph=cuda_graph, engine=engine,
                                    progress_callback=lambda row: ends.append((time.perf_counter(), time.process_time())))
        per_epoch = -(-metrics["n_train_slates"] // config.batch_size)
        rates[engine] += [per_epoch / (b[0] - a[0]) for a, b in zip(ends, ends[1:])]  # epochs 2…, one rate each
        cpu_rates[engine] += [per_epoch / (b[1] - a[1]) for a, b in zip(ends, ends[1:])]
        weights.setdefault(engine, model.state_dict())
    same = all(torch.equal(weights["loop"][k], weights["lightning"][k]) for k in weights["loop"])
    loop, lightning = statistics.median(rates["loop"]), statistics.median(rates["lightning"])
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({device_name}), {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"pytorch-lightning {pl_version()}; {episodes:,} episodes, {per_epoch:,} batches of {config.batch_size} "
          f"per epoch, {epochs} epochs per run (the first untimed), runs loop, lightning, lightning, loop")
    cpu_loop, cpu_lightning = statistics.median(cpu_rates["loop"]), statistics.median(cpu_rates["lightning"])
    # Per second of this process's CPU time too: on a shared machine the wall-clock rate also measures the
    # neighbours; the CPU-time rate is what each engine costs.
    print("| engine | median batches/s (wall) | median batches per CPU-second | timed epochs |")
    print("|---|---:|---:|---:|")
    print(f"| plain loop | {loop:,.1f} | {cpu_loop:,.1f} | {len(rates['loop'])} |")
    print(f"| Lightning Trainer | {lightning:,.1f} | {cpu_lightning:,.1f} | {len(rates['lightning'])} |")
    print(f"| Lightning / loop | {lightning / loop:.3f} | {cpu_lightning / cpu_loop:.3f} | |")
    print(f"| same weights (bitwise) | {'yes' if same else 'NO'} | | |")


def pl_version() -> str:
    import pytorch_lightning

    return pytorch_lightning.__version__


def compare_stacked(members: int, episodes: int, epochs: int, device: str, cuda_graph: bool) -> None:
    """K solo runs and one stack of the same K members, timed in this process (see the module docstring)."""
    config = GeMSConfig(max_epochs=epochs, val_fraction=0.01, accelerator=device)
    stack = [GeMSMember(*synthetic_logged(episodes, seed=k), config, seed=k) for k in range(members)]
    solo_seconds, per_epoch = 0.0, 0
    for member in stack:
        ends: list[float] = []
        _, metrics = train_gems(member.slates, member.clicks, config, member.seed,
                                progress_callback=lambda row: ends.append(time.perf_counter()), cuda_graph=cuda_graph)
        per_epoch = -(-metrics["n_train_slates"] // config.batch_size)
        solo_seconds += (ends[-1] - ends[0]) / (len(ends) - 1)  # one timed epoch of this member
    solo_rate = members * per_epoch / solo_seconds
    stacked_ends: list[float] = []
    train_stacked_gems(stack, progress_callback=lambda k, row: stacked_ends.append(time.perf_counter()) if k == 0 else None,
                       cuda_graph=cuda_graph)
    stacked_rate = members * _timed_rate(stacked_ends, per_epoch)
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({device_name}), {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"K = {members} members of {episodes:,} episodes, {per_epoch:,} batches of {config.batch_size} per "
          f"epoch each, {epochs} epochs (the first untimed)")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| K solo runs one after another, member batches/s | {solo_rate:,.1f} |")
    print(f"| one stack of K, member batches/s | {stacked_rate:,.1f} |")
    print(f"| stacked / solo | {stacked_rate / solo_rate:.2f}x |")
    print(f"| reference size for K members (K × 527k batches) stacked, h | {members * 527_000 / stacked_rate / 3600:,.1f} |")


def timed_child(mode: str, members: int, episodes: int, epochs: int, device: str, cuda_graph: bool) -> None:
    """One timed pretraining for `--against` (a fresh process of either side): prints its rates as JSON."""
    config = GeMSConfig(max_epochs=epochs, val_fraction=0.01, accelerator=device)
    stack = [GeMSMember(*synthetic_logged(episodes, seed=k), config, seed=k) for k in range(members)]
    ends: list[tuple[float, float]] = []
    clock = lambda *_: ends.append((time.perf_counter(), time.process_time()))  # noqa: E731
    if mode == "solo":
        _, metrics = train_gems(stack[0].slates, stack[0].clicks, config, 0, progress_callback=clock, cuda_graph=cuda_graph)
    else:
        options = {"cuda_graph": cuda_graph} if "cuda_graph" in inspect.signature(train_stacked_gems).parameters else {}
        metrics = train_stacked_gems(stack, progress_callback=lambda k, row: clock() if k == 0 else None, **options)[0][1]
    batches = members * -(-metrics["n_train_slates"] // config.batch_size) * (len(ends) - 1)
    print(json.dumps({"wall": batches / (ends[-1][0] - ends[0][0]), "cpu": batches / (ends[-1][1] - ends[0][1]),
                      "code": str(Path(inspect.getfile(train_gems)).parent)}))


def compare_commits(rev: str, argv: list[str], episodes: int, epochs: int, stacked: int | None) -> None:
    """This checkout against commit `rev`, ABBA in fresh processes (module docstring)."""
    root = Path(__file__).resolve().parent.parent
    rates: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as old_tree:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "slatectl"], check=True, capture_output=True).stdout
        with tempfile.TemporaryFile() as tar_file:
            tar_file.write(archive)
            tar_file.seek(0)
            tarfile.open(fileobj=tar_file).extractall(old_tree, filter="data")
        child = [arg for i, arg in enumerate(argv) if arg != "--against" and (i == 0 or argv[i - 1] != "--against")]
        for side in ("old", "new", "new", "old"):
            env = {**os.environ, "PYTHONPATH": old_tree if side == "old" else str(root)}
            out = subprocess.run([sys.executable, __file__, *child, "--child", "stacked" if stacked else "solo"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            rates[side].append(json.loads(out.strip().splitlines()[-1]))
    what = f"one stack of K = {stacked}" if stacked else "train_gems (solo)"
    print(f"{what}: {episodes:,} episodes, {epochs} epochs per run (the first untimed), torch {torch.__version__}, "
          f"runs old ({rev}), new, new, old; old code from {rates['old'][0]['code']}")
    print("| code | member batches/s (wall), median | member batches per CPU-second, median |")
    print("|---|---:|---:|")
    medians = {side: [statistics.median(r[key] for r in runs) for key in ("wall", "cpu")] for side, runs in rates.items()}
    for side in ("old", "new"):
        print(f"| {side} | {medians[side][0]:,.1f} | {medians[side][1]:,.1f} |")
    print(f"| new / old | {medians['new'][0] / medians['old'][0]:.3f} | {medians['new'][1] / medians['old'][1]:.3f} |")


if __name__ == "__main__":
    main()
