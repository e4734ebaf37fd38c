"""Figures of `slatectl inspect run --plot` (learning curve) and `inspect dataset --plot` (returns).

matplotlib is imported only when a figure is drawn, so `inspect` without --plot starts fast.
"""

from __future__ import annotations

from pathlib import Path

from slatectl.errors import BadInput, write_failed
from slatectl.registry.models import Checkpoint, Promotion, Run, Validation

# Formats matplotlib writes with its default (Agg) backend and no extra packages.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def plot_destination(path: Path, default_name: str) -> Path:
    """The file a `--plot PATH` writes, checked before any work: an existing folder gets `default_name`
    inside it, a path without a suffix gets `.png`; an unsupported suffix, a folder that does not exist
    (none is created) and a target that is not a regular file (a device such as /dev/full) are bad
    input (exit 2)."""
    path = Path(path)
    if path.exists() and not path.is_dir() and not path.is_file():  # /dev/full, a FIFO, a socket
        raise BadInput(f"cannot write a plot to {str(path)!r}: it is not a regular file; give a file name or a folder.")
    if path.is_dir():
        path = path / default_name
    elif not path.suffix:
        path = path.with_name(path.name + ".png")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise BadInput(f"cannot write a plot to {str(path)!r}: unsupported file type {path.suffix!r}; "
                       f"use one of {', '.join(PLOT_SUFFIXES)} (or a folder, which gets {default_name}).")
    if path.parent.exists() and not path.parent.is_dir():
        raise BadInput(f"cannot write a plot to {str(path)!r}: {str(path.parent)!r} is not a folder.")
    if not path.parent.exists():
        raise BadInput(f"cannot write a plot to {str(path)!r}: the folder {str(path.parent)!r} does not exist; "
                       "create it first.")
    if path.exists() and not path.is_file():
        raise BadInput(f"cannot write a plot to {str(path)!r}: it is not a regular file.")
    return path


def plot_learning_curve(run: Run, checkpoints: list[Checkpoint], validations: list[Validation],
                        promotions: list[Promotion], path: Path, reference: dict[str, float] | None = None) -> Path:
    """Write `learning_curve_figure` to `path`."""
    return _save(learning_curve_figure(run, checkpoints, validations, promotions, reference), path)


def learning_curve_figure(run: Run, checkpoints: list[Checkpoint], validations: list[Validation],
                          promotions: list[Promotion], reference: dict[str, float] | None = None):
    """Validation return vs step (± std); trained checkpoints as dots, untrained ones (saved within the
    random phase, before any update) as hollow grey squares; the best trained checkpoint (what the expert
    rule takes) starred; every checkpoint ever promoted labelled with its quality (active promotions in
    bold); `reference` returns (label -> value: the random policy, the short-term oracle) as horizontal
    lines, so a curve reads against what needs no training."""
    points = {v.step: (v.return_mean, v.return_std) for v in validations}
    for checkpoint in checkpoints:  # checkpoint steps were validated too, even without a separate point
        points.setdefault(checkpoint.step, (checkpoint.val_return_mean, checkpoint.val_return_std))
    steps = sorted(points)
    means = [points[s][0] for s in steps]
    stds = [points[s][1] for s in steps]
    trained = [c for c in checkpoints if c.trained is not False]
    untrained = [c for c in checkpoints if c.trained is False]

    figure, axes = _new_figure()
    if steps:
        axes.plot(steps, means, color="tab:blue", label="validation return")
        axes.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                          color="tab:blue", alpha=0.15, linewidth=0)
    if trained:
        axes.scatter([c.step for c in trained], [c.val_return_mean for c in trained], color="tab:orange",
                     zorder=3, label="saved checkpoint")
    if untrained:
        axes.scatter([c.step for c in untrained], [c.val_return_mean for c in untrained], marker="s", s=60,
                     facecolors="none", edgecolors="dimgray", linewidths=1.5, zorder=3,
                     label="untrained checkpoint (random phase, no update yet)")
    if trained:
        best = max(trained, key=lambda c: c.val_return_mean)  # the first (earliest) of equals
        axes.scatter([best.step], [best.val_return_mean], marker="*", s=250, color="gold",
                     edgecolors="black", zorder=4, label="best trained")
    for (label, value), (color, style) in zip((reference or {}).items(),
                                              (("tab:red", ":"), ("tab:green", "--"), ("tab:purple", "-."))):
        axes.axhline(value, color=color, linestyle=style, linewidth=1.2, label=f"{label} {value:.1f}")
    by_id = {c.id: c for c in checkpoints}
    for promotion in promotions:
        checkpoint = by_id.get(promotion.checkpoint_id)
        if checkpoint is None:
            continue
        label = f"{promotion.quality} #{promotion.id}" + ("" if promotion.active else " (superseded)")
        axes.annotate(label, (checkpoint.step, checkpoint.val_return_mean), textcoords="offset points",
                      xytext=(0, 12), ha="center", fontsize=8, fontweight="bold" if promotion.active else "normal",
                      color="black" if promotion.active else "gray",
                      arrowprops={"arrowstyle": "-", "color": "gray"})
    axes.set_xlabel("training step")
    axes.set_ylabel("validation return (clicks per episode)")
    axes.set_title(f"run {run.id}: {run.agent} on {run.env} (seed {run.seed})")
    axes.grid(alpha=0.3)
    if steps or checkpoints or reference:
        axes.legend(loc="best", fontsize=8)
    return figure


def plot_return_histogram(returns, title: str, path: Path, reference: dict[str, float] | None = None) -> Path:
    """Histogram of per-episode returns, with the mean and optional reference returns as vertical lines."""
    import numpy as np

    returns = np.asarray(returns, dtype=float)
    figure, axes = _new_figure()
    bins = min(60, max(10, int(np.sqrt(returns.size))))
    axes.hist(returns, bins=bins, color="tab:blue", alpha=0.8)
    axes.axvline(returns.mean(), color="black", linestyle="--", label=f"mean {returns.mean():.1f}")
    for (label, value), color in zip((reference or {}).items(), ("tab:red", "tab:green", "tab:purple")):
        axes.axvline(value, color=color, linestyle=":", label=f"{label} {value:.1f}")
    axes.set_xlabel("episode return (clicks per 100-step episode)")
    axes.set_ylabel("episodes")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def _new_figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5))


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    except OSError as exc:  # disk full, read-only folder: no half-written image is left
        path.unlink(missing_ok=True)
        raise write_failed(path, exc, "no plot was written") from exc
    finally:
        plt.close(figure)
    return path
