"""`slatectl ckpt ...`: list, show, promote checkpoints, and the promotion history."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from slatectl.registry import Checkpoint, Registry, check_quality, open_registry
from slatectl.registry.records import checkpoint_record, iso, promotion_record, run_record
from slatectl.registry.suggest import RandomReturnFn, Suggestion, compute_random_return
from slatectl.cli.common import console, get_settings, print_json
from slatectl.errors import BadInput

app = typer.Typer(help="Registered checkpoints: list, show, promote for a quality, promotion history.",
                  no_args_is_help=True)

# Where `promote` gets the random policy's return when none is registered; tests swap in a number.
random_return_fn: RandomReturnFn | None = compute_random_return


def is_interactive() -> bool:
    return sys.stdin.isatty()


def active_qualities(reg: Registry) -> dict[int, list[str]]:
    """checkpoint id -> qualities it is the active promotion for."""
    promoted: dict[int, list[str]] = {}
    for promotion in reg.active_promotions():
        promoted.setdefault(promotion.checkpoint_id, []).append(promotion.quality)
    return promoted


def checkpoint_table(checkpoints: list[Checkpoint], promoted: dict[int, list[str]], title: str) -> Table:
    table = Table(title=title)
    for column, justify in (("id", "right"), ("run", "right"), ("env", "left"), ("agent", "left"),
                            ("step", "right"), ("val return", "right"), ("test return", "right"),
                            ("flags", "left"), ("sha256", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for c in checkpoints:
        flags = [f for f, on in (("best", c.is_best), ("last", c.is_last)) if on] + promoted.get(c.id, [])
        test = "" if c.test_return_mean is None else f"{c.test_return_mean:.2f}±{c.test_return_std:.2f}"
        table.add_row(str(c.id), str(c.run_id), c.env, c.agent, f"{c.step:,}",
                      f"{c.val_return_mean:.2f}±{c.val_return_std:.2f}", test, " ".join(flags), c.sha256[:10])
    return table


@app.command("list")
def list_checkpoints(
    env: Optional[str] = typer.Option(None, "--env", help="Only this environment."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Only this agent, e.g. sac-gems."),
    run: Optional[int] = typer.Option(None, "--run", help="Only this run id."),
    quality: Optional[str] = typer.Option(None, "--quality", help="Only checkpoints currently promoted as this quality."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List registered checkpoints with step, validation return and flags (best, last, promoted).

    Example: slatectl ckpt list --env diffuse_topdown --agent sac-gems
    """
    with open_registry(get_settings()) as reg:
        checkpoints = reg.list_checkpoints(env=env, agent=agent, run_id=run, quality=quality)
        promoted = active_qualities(reg)
    if as_json:
        print_json([checkpoint_record(c, promoted.get(c.id)) for c in checkpoints])
        return
    if not checkpoints:
        console.print("No checkpoints match. Train with `slatectl train AGENT --env ENV --save-every N`.")
        return
    console.print(checkpoint_table(checkpoints, promoted, f"{len(checkpoints)} checkpoint(s)"))


@app.command("show")
def show_checkpoint(
    ckpt_id: int = typer.Argument(..., metavar="CKPT_ID", help="Checkpoint id (see `ckpt list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show one checkpoint: its run, validation/test returns, file, and the promotions that used it.

    Example: slatectl ckpt show 12 --json
    """
    with open_registry(get_settings()) as reg:
        checkpoint = reg.get_checkpoint(ckpt_id)
        run = reg.get_run(checkpoint.run_id)
        history = [p for p in reg.promotion_history(env=checkpoint.env) if p.checkpoint_id == ckpt_id]
        path = reg.store.path_for(checkpoint.storage_key)
    record = checkpoint_record(checkpoint, [p.quality for p in history if p.active])
    if as_json:
        print_json({**record, "path": str(path), "run": run_record(run),
                    "promotions": [promotion_record(p) for p in history]})
        return
    table = Table(title=f"checkpoint {ckpt_id}", show_header=False)
    for key, value in record.items():
        table.add_row(key, "" if value is None else str(value))
    table.add_row("path", str(path))
    table.add_row("run", f"{run.id}: {run.agent} on {run.env}, seed {run.seed}, {run.status}")
    console.print(table)
    for p in history:
        console.print(f"promotion {p.id}: {p.quality} on {iso(p.promoted_at)} by {p.promoted_by}"
                      f"{' (active)' if p.active else f' (superseded by {p.superseded_by})'}"
                      f"{f' — {p.note}' if p.note else ''}")


def resolve_env(reg: Registry, env: Optional[str]) -> str:
    if env:
        return env
    envs = reg.checkpoint_envs()
    if len(envs) == 1:
        return envs[0]
    if not envs:
        raise BadInput("there are no checkpoints in the registry yet; train an agent with --save-every first.")
    raise BadInput(f"checkpoints exist for several envs ({', '.join(envs)}); say which with --env.")


def candidates_table(suggestion: Suggestion, chosen: Checkpoint) -> Table:
    table = Table(title=f"{suggestion.quality} candidates for {suggestion.env}")
    for column, justify in (("id", "right"), ("run", "right"), ("agent", "left"), ("step", "right"),
                            ("val return", "right"), ("% of best", "right"), ("", "left")):
        table.add_column(column, justify=justify)
    for candidate in suggestion.candidates:
        c = candidate.checkpoint
        share = "" if candidate.share_of_best is None else f"{100 * candidate.share_of_best:.0f}%"
        marks = [m for m, on in (("best", c.is_best), ("← suggested", c.id == suggestion.suggested.id),
                                 ("← chosen", c.id == chosen.id and chosen.id != suggestion.suggested.id)) if on]
        table.add_row(str(c.id), str(c.run_id), c.agent, f"{c.step:,}",
                      f"{c.val_return_mean:.2f} ± {c.val_return_std:.2f}", share, " ".join(marks))
    return table


def pick_step(suggestion: Suggestion, step: int) -> Checkpoint:
    matches = [c.checkpoint for c in suggestion.candidates if c.checkpoint.step == step]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        steps = ", ".join(f"{s:,}" for s in sorted({c.checkpoint.step for c in suggestion.candidates}))
        raise BadInput(f"no checkpoint of {suggestion.env} was saved at step {step:,}; saved steps: {steps}.")
    raise BadInput(f"several checkpoints of {suggestion.env} were saved at step {step:,} "
                   f"(ids {', '.join(str(c.id) for c in matches)}); give the id, or narrow with --run or --agent.")


@app.command("promote")
def promote(
    ckpt_id: Optional[int] = typer.Argument(None, metavar="CKPT_ID", help="Checkpoint to promote; omit to see candidates and a suggestion."),
    quality: str = typer.Option(..., "--quality", help="medium | expert (random needs no checkpoint and is refused)."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment; optional when only one env has checkpoints."),
    step: Optional[int] = typer.Option(None, "--step", help="Promote the checkpoint saved at this step."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Take the suggestion without asking (needed without a terminal)."),
    note: Optional[str] = typer.Option(None, "--note", help="Why this checkpoint; kept in the history."),
    target_fraction: float = typer.Option(0.5, "--target-fraction", help="medium target: random + F × (best − random)."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Only consider checkpoints of this agent."),
    run: Optional[int] = typer.Option(None, "--run", help="Only consider checkpoints of this run."),
) -> None:
    """Promote a checkpoint as the medium or expert policy of an env (the previous one stays in history).

    Without CKPT_ID, shows the candidates (step, validation return, share of the best) and suggests one:
    expert = highest validation return; medium = validation return closest to
    random + F × (best − random), F = --target-fraction (0.5). In a terminal it asks before promoting;
    without one it needs --yes (take the suggestion), --step or an id.

    Example: slatectl ckpt promote --quality medium --env diffuse_topdown --note "50k of 100k"
    """
    check_quality(quality)
    with open_registry(get_settings()) as reg:
        if ckpt_id is not None:
            if step is not None:
                raise BadInput("give either CKPT_ID or --step, not both.")
            chosen = reg.get_checkpoint(ckpt_id)
            if env is not None and env != chosen.env:
                raise BadInput(f"checkpoint {ckpt_id} was trained on {chosen.env}, not {env}; promote a checkpoint "
                               f"of {env} (`slatectl ckpt list --env {env}`).")
        else:
            env = resolve_env(reg, env)
            suggestion = reg.suggest_checkpoint(env, quality, target_fraction=target_fraction, agent=agent,
                                                run_id=run, compute_random=random_return_fn)
            chosen = suggestion.suggested if step is None else pick_step(suggestion, step)
            console.print(candidates_table(suggestion, chosen))
            console.print(f"Rule: {suggestion.rule}.")
            if suggestion.random_source:
                console.print(f"Random-policy return: {suggestion.random_return:.3f} ({suggestion.random_source}).")
            if step is None and not yes:
                question = (f"Promote checkpoint {chosen.id} ({chosen.agent}, step {chosen.step:,}, val return "
                            f"{chosen.val_return_mean:.2f}) as {quality} for {env}?")
                if not is_interactive():
                    raise BadInput(f"no terminal to confirm in: pass --yes to promote the suggested checkpoint "
                                   f"{chosen.id}, or give a CKPT_ID or --step.")
                if not typer.confirm(question, default=True):
                    console.print("Nothing promoted.")
                    raise typer.Exit(0)
        previous = reg.active_promotion(chosen.env, quality)
        promotion = reg.promote_checkpoint(chosen.env, quality, chosen.id, note)
    console.print(f"Promoted checkpoint {chosen.id} ({chosen.agent}, step {chosen.step:,}, val return "
                  f"{chosen.val_return_mean:.2f}) as {quality} for {chosen.env} (promotion {promotion.id}).")
    if previous is not None:
        console.print(f"It supersedes promotion {previous.id} (checkpoint {previous.checkpoint_id}), kept in the history.")


@app.command("history")
def history(
    env: Optional[str] = typer.Option(None, "--env", help="Only this environment."),
    quality: Optional[str] = typer.Option(None, "--quality", help="Only this quality."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Every promotion, oldest first, with which is active and what superseded the others.

    Example: slatectl ckpt history --env diffuse_topdown --quality medium --json
    """
    with open_registry(get_settings()) as reg:
        promotions = reg.promotion_history(env=env, quality=quality)
    if as_json:
        print_json([promotion_record(p) for p in promotions])
        return
    if not promotions:
        console.print("No promotions yet. Choose one with `slatectl ckpt promote --quality medium|expert`.")
        return
    table = Table(title="promotion history")
    for column in ("id", "env", "quality", "checkpoint", "promoted at (UTC)", "by", "status", "note"):
        table.add_column(column, overflow="fold")
    for p in promotions:
        status = "active" if p.active else f"superseded by {p.superseded_by}"
        table.add_row(str(p.id), p.env, p.quality, str(p.checkpoint_id), iso(p.promoted_at), p.promoted_by,
                      status, p.note or "")
    console.print(table)
