"""`slatectl inspect`: the registry at a glance, one run's learning curve, one dataset's lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slatectl.registry import open_registry, run_liveness
from slatectl.cli.plots import PLOT_SUFFIXES, plot_destination, plot_learning_curve, plot_return_histogram
from slatectl.registry.records import checkpoint_record, dataset_record, iso, promotion_record, run_record, validation_record
from slatectl.cli.ckpt_cmd import active_qualities, checkpoint_table
from slatectl.cli.formatting import DROP, FOLD, SQUEEZE, compact_table, fmt_bytes, format_field, format_settings, print_record
from slatectl.cli.common import MAX_LIST, console, get_settings, print_json
from slatectl.collect.random_return import compute_oracle_return, compute_random_return
from slatectl.collect.reader import UnreadableDataset, episode_returns, return_summary
from slatectl.errors import BadInput
from slatectl.domain import RANDOM_POLICY

app = typer.Typer(rich_markup_mode=None)  # help comes from the overview callback's docstring

ID_MAX = 2**63 - 1  # registry ids are signed 64-bit integers
PLOT_HELP = f"({', '.join(PLOT_SUFFIXES)}; a folder gets a default file name; no suffix means .png)"

# The reference levels of a learning curve (`inspect run --plot`), simulated when the registry has none
# (a few seconds); tests swap in numbers.
random_return_fn = compute_random_return
oracle_return_fn = compute_oracle_return


@app.callback(invoke_without_command=True)
def overview(
    ctx: typer.Context,
    limit: int = typer.Option(10, "--limit", metavar="N", min=1, max=MAX_LIST, help="How many recent runs and datasets to list."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Look at the registry: an overview of runs, checkpoints, promotions and datasets; `inspect run`
    shows a run's learning curve, `inspect dataset` a dataset's lineage.

    Example: slatectl inspect --limit 20
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = get_settings()
    with open_registry(settings) as reg:
        view = reg.overview(limit=limit)
        url, schema = reg.url, reg.schema_version
    if as_json:
        print_json({
            "registry": {"url": url, "home": str(settings.home), "schema_version": schema},
            "counts": view.counts,
            "runs": [{**run_record(s.run), "liveness": s.liveness, "disk_bytes": s.disk_bytes,
                      "checkpoints": s.checkpoints, "best_val_return": s.best_val_return,
                      "last_step": s.last_step} for s in view.runs],
            "promotions": [{**promotion_record(p), "agent": c.agent, "step": c.step, "val_return": c.val_return_mean}
                           for p, c in view.active_promotions],
            "datasets": [dataset_record(d) for d in view.datasets],
        })
        return
    # The URL and the folder whole, each on its own line (unwrapped, so they can be copied).
    console.print(f"Registry {url} (schema v{schema})", soft_wrap=True)
    console.print(f"Artifacts in {settings.artifacts_dir}", soft_wrap=True)
    console.print("  ".join(f"{name}: {count}" for name, count in view.counts.items()))
    if view.runs:
        columns = [("id", "right"), ("agent", "left"), ("env", "left"), ("seed", "right"), ("status", "left"),
                   ("ckpts", "right"), ("best val", "right"), ("last step", "right"), ("disk", "right"),
                   ("started (UTC)", "left")]
        rows = [[str(s.run.id), s.run.agent, s.run.env, str(s.run.seed), s.liveness or s.run.status,
                 str(s.checkpoints), "" if s.best_val_return is None else f"{s.best_val_return:.1f}",
                 "" if s.last_step is None else f"{s.last_step:,}", fmt_bytes(s.disk_bytes),
                 iso(s.run.started_at)[:16].replace("T", " ")] for s in view.runs]
        runs = compact_table(f"recent runs (latest {limit})", columns, rows, width=console.width,
                             give_way=(("started (UTC)", DROP), ("seed", DROP), ("disk", DROP)))
        console.print(runs)
    if view.active_promotions:
        columns = [("env", "left"), ("quality", "left"), ("ckpt", "right"), ("agent", "left"), ("step", "right"),
                   ("val return", "right"), ("promoted (UTC)", "left"), ("by", "left")]
        rows = [[p.env, p.quality, str(c.id), c.agent, f"{c.step:,}", f"{c.val_return_mean:.1f}",
                 iso(p.promoted_at)[:16].replace("T", " "), p.promoted_by] for p, c in view.active_promotions]
        console.print(compact_table("active promotions", columns, rows, width=console.width,
                                    give_way=(("by", SQUEEZE), ("promoted (UTC)", DROP), ("by", DROP))))
    if view.datasets:
        columns = [("id", "right"), ("env", "left"), ("quality", "left"), ("policy", "left"), ("ckpt", "right"),
                   ("episodes", "right"), ("transitions", "right"), ("mean return", "right"), ("format", "left")]
        rows = [[str(d.id), d.env, d.quality, d.policy, "" if d.checkpoint_id is None else str(d.checkpoint_id),
                 f"{d.episodes:,}", f"{d.transitions:,}", f"{d.return_mean:.1f}", d.format] for d in view.datasets]
        console.print(compact_table(f"recent datasets (latest {limit})", columns, rows, width=console.width,
                                    give_way=(("transitions", DROP), ("format", DROP))))
    if not any(view.counts.values()):
        console.print("The registry is empty. Start with `slatectl train AGENT --env ENV --save-every N`.")


@app.command("run")
def inspect_run(
    run_id: int = typer.Argument(..., metavar="RUN_ID", min=1, max=ID_MAX, help="Run id (see `slatectl inspect`)."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE", help=f"Write the learning curve to this image file {PLOT_HELP}."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """One run: its config, checkpoints and validation curve; --plot draws validation return vs step with
    saved checkpoints (untrained ones apart), the best trained one and promotions marked, and the random
    policy's and the short-term oracle's returns as reference lines.

    Example: slatectl inspect run 3 --plot run3.png
    """
    if plot is not None:
        plot = plot_destination(plot, f"run-{run_id}.png")
    with open_registry(get_settings()) as reg:
        run = reg.get_run(run_id)
        checkpoints = reg.list_checkpoints(run_id=run_id)
        validations = reg.validations(run_id)
        ids = {c.id for c in checkpoints}
        promotions = [p for p in reg.promotion_history(env=run.env) if p.checkpoint_id in ids]
        promoted = active_qualities(reg)
        disk_bytes = reg.run_disk_usage(run_id)
        liveness = run_liveness(run)
        registered_random = reg.policy_return(run.env, RANDOM_POLICY) if plot is not None else None
    if plot is not None:
        reference = {"random policy": registered_random[0] if registered_random else random_return_fn(run.env),
                     "short-term oracle": oracle_return_fn(run.env)}
        plot_learning_curve(run, checkpoints, validations, promotions, plot, reference)
    if as_json:
        print_json({**run_record(run), "liveness": liveness, "disk_bytes": disk_bytes,
                    "checkpoints": [checkpoint_record(c, promoted.get(c.id)) for c in checkpoints],
                    "validations": [validation_record(v) for v in validations],
                    "promotions": [promotion_record(p) for p in promotions],
                    "plot": None if plot is None else str(plot)})
        return
    fields = [(key, format_field(key, value)) for key, value in run_record(run).items() if key != "config"]
    fields += [("disk", f"{fmt_bytes(disk_bytes)} (checkpoints and kept resume states)"),
               ("config", format_settings(_flatten(run.config)))]
    print_record(console, f"run {run.id}", fields)
    if checkpoints:
        console.print(checkpoint_table(checkpoints, promoted, f"checkpoints of run {run.id}"))
    else:
        console.print("No checkpoints registered for this run.")
    if plot is not None:
        console.print(f"Learning curve written to {plot}")


@app.command("dataset")
def inspect_dataset(
    dataset_id: int = typer.Argument(..., metavar="DATASET_ID", min=1, max=ID_MAX, help="Dataset id (see `slatectl inspect`)."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE", help=f"Write a histogram of episode returns to this image file {PLOT_HELP}."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """One dataset: episodes, transitions, return mean/std/percentiles (read from its hash-checked file),
    its lineage back to the run and the pretrained inputs it came from; --plot draws the return histogram.

    Example: slatectl inspect dataset 4 --plot returns.png
    """
    if plot is not None:
        plot = plot_destination(plot, f"dataset-{dataset_id}-returns.png")
    with open_registry(get_settings()) as reg:
        dataset = reg.get_dataset(dataset_id)
        lineage = reg.dataset_lineage(dataset_id)
        path = reg.dataset_path(dataset_id)
        random_return = reg.policy_return(dataset.env, RANDOM_POLICY)
    try:
        returns = episode_returns(path, dataset.format)
        summary: dict | str = return_summary(returns)
    except UnreadableDataset as exc:
        if plot is not None:
            raise BadInput(f"cannot plot dataset {dataset_id}: {exc}") from exc
        summary = f"not available: {exc}"
    record = {**dataset_record(dataset), "path": str(path), "returns": summary}
    if plot is not None:
        reference = {"random policy": random_return[0]} if random_return is not None else {}
        plot_return_histogram(returns, f"dataset {dataset.id}: {dataset.env} / {dataset.quality} "
                                       f"({dataset.episodes:,} episodes)", plot, reference)
    if as_json:
        print_json({**record, "plot": None if plot is None else str(plot),
                    "lineage": [{"kind": n.kind, "id": n.id, "label": n.label, **n.details} for n in lineage]})
        return
    fields = [(key, format_field(key, value)) for key, value in record.items() if key not in ("returns", "metadata")]
    fields += [(f"metadata.{key}", format_field(key, value)) for key, value in _flatten(dataset.meta).items()]
    fields.append(("returns", summary if isinstance(summary, str) else "  ".join(f"{k} {v:.2f}" for k, v in summary.items())))
    print_record(console, f"dataset {dataset_id}", fields)
    console.print(compact_table("lineage (newest first)", [("kind", "left"), ("id", "right"), ("what", "left")],
                                [[node.kind, str(node.id), node.label] for node in lineage],
                                give_way=(("what", FOLD),), width=console.width))
    if plot is not None:
        console.print(f"Return histogram written to {plot}")


def _flatten(config: dict, prefix: str = "") -> dict:
    """{"training": {"seed": 1}} -> {"training.seed": 1}: one readable `key=value` list for a table."""
    flat: dict = {}
    for key, value in sorted(config.items()):
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
