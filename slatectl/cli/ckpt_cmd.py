"""`slatectl ckpt ...`: list, show, promote checkpoints, and the promotion history."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from slatectl.cli.common import complete_env, console, err_console, get_settings, print_json
from slatectl.cli.formatting import DROP, FOLD, SQUEEZE, WRAP, compact_table, fmt_bytes, fmt_return, format_field, print_record
from slatectl.collect.random_return import compute_random_return
from slatectl.configs import check_env_name, trained_agent_names
from slatectl.domain import RANDOM_POLICY, Quality
from slatectl.errors import BadInput
from slatectl.registry import (STALE, Checkpoint, Registry, RandomReturnFn, Suggestion, check_quality,
                               check_target_fraction, open_registry, require_writable, run_liveness)
from slatectl.registry.records import checkpoint_record, iso, promotion_record, run_record

app = typer.Typer(help="Registered checkpoints: list, show, promote for a quality, promotion history.",
                  no_args_is_help=True)

# Where `promote` gets the random policy's return when none is registered; tests swap in a number.
random_return_fn: RandomReturnFn | None = compute_random_return

MAX_ID = 2**63 - 1
MAX_STEP = 10**12


def is_interactive() -> bool:
    return sys.stdin.isatty()


def check_env(env: Optional[str]) -> Optional[str]:
    """An env name the simulator knows (exit 2 otherwise), checked before the registry is opened."""
    return None if env is None else check_env_name(env)


def check_agent(agent: Optional[str]) -> Optional[str]:
    """An agent name slatectl trains (exit 2 otherwise, naming them), checked before the registry is opened."""
    if agent is not None and agent not in trained_agent_names():
        raise BadInput(f"unknown agent {agent!r}. Known agents: {', '.join(trained_agent_names())}.")
    return agent


def active_qualities(reg: Registry) -> dict[int, list[str]]:
    """checkpoint id -> qualities it is the active promotion for."""
    promoted: dict[int, list[str]] = {}
    for promotion in reg.active_promotions():
        promoted.setdefault(promotion.checkpoint_id, []).append(promotion.quality)
    return promoted


def stale_runs(reg: Registry, checkpoints: list[Checkpoint]) -> set[int]:
    """Ids of the checkpoints' runs whose process stopped sending heartbeats while `running`."""
    ids = {c.run_id for c in checkpoints}
    return {r.id for r in reg.list_runs() if r.id in ids and run_liveness(r) == STALE}


def checkpoint_flags(c: Checkpoint, promoted: dict[int, list[str]]) -> list[str]:
    return ([f for f, on in (("best", c.is_best), ("last", c.is_last), ("untrained", c.trained is False)) if on]
            + promoted.get(c.id, []))


def checkpoint_table(checkpoints: list[Checkpoint], promoted: dict[int, list[str]], title: str,
                     stale: set[int] = frozenset()) -> Table:
    """One line per checkpoint; the env and test-return columns appear only when they say something."""
    several_envs = len({c.env for c in checkpoints}) > 1
    tested = any(c.test_return_mean is not None for c in checkpoints)
    columns = [("id", "right"), ("run", "right")] + ([("env", "left")] if several_envs else []) + [
        ("agent", "left"), ("step", "right"), ("val return", "right")] + (
        [("test return", "right")] if tested else []) + [("flags", "left"), ("sha256", "left")]
    rows = [_checkpoint_cells(c, promoted, stale, several_envs, tested) for c in checkpoints]
    table = compact_table(title, columns, rows, width=console.width,
                          give_way=(("sha256", DROP), ("flags", WRAP), ("test return", DROP), ("run", DROP)))
    if not several_envs and checkpoints:
        table.title = f"{title} of {checkpoints[0].env}"
    return table


def _checkpoint_cells(c: Checkpoint, promoted: dict[int, list[str]], stale: set[int], several_envs: bool,
                      tested: bool) -> list[str]:
    cells = [str(c.id), f"{c.run_id} (stale)" if c.run_id in stale else str(c.run_id)]
    cells += [c.env] if several_envs else []
    cells += [c.agent, f"{c.step:,}", fmt_return(c.val_return_mean, c.val_return_std)]
    cells += [fmt_return(c.test_return_mean, c.test_return_std)] if tested else []
    cells += [" ".join(checkpoint_flags(c, promoted)), c.sha256[:8]]
    return cells


@app.command("list")
def list_checkpoints(
    env: Optional[str] = typer.Option(None, "--env", metavar="ENV", help="Only this environment (one of `slatectl env list`).", autocompletion=complete_env),
    agent: Optional[str] = typer.Option(None, "--agent", metavar="AGENT", help="Only this agent, e.g. sac-gems."),
    run: Optional[int] = typer.Option(None, "--run", min=1, max=MAX_ID, metavar="RUN_ID", help="Only this run id."),
    quality: Optional[Quality] = typer.Option(None, "--quality", help="Only checkpoints currently promoted as this quality."),
    group: Optional[str] = typer.Option(None, "--group", metavar="GROUP", help="Only the member runs of this population (`train --seeds`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List registered checkpoints with step, validation return and flags: best, last, the qualities it
    is promoted as, and `untrained` for checkpoints saved within the random phase (before any agent
    update: the initial weights, never suggested by `ckpt promote`). A run shown as `(stale)` was
    `running` but its process stopped sending heartbeats.

    Example: slatectl ckpt list --env diffuse_topdown --agent sac-gems
    """
    check_env(env)
    check_agent(agent)
    with open_registry(get_settings()) as reg:
        checkpoints = reg.list_checkpoints(env=env, agent=agent, run_id=run, quality=quality)
        if group is not None:
            members = {r.id for r in reg.list_runs(group_id=group)}
            if not members:
                raise BadInput(f"no population {group!r} in the registry (a member's group id is shown by "
                               f"`slatectl inspect run RUN_ID`).")
            checkpoints = [c for c in checkpoints if c.run_id in members]
        promoted = active_qualities(reg)
        stale = stale_runs(reg, checkpoints)
    if as_json:
        print_json([{**checkpoint_record(c, promoted.get(c.id)), "run_stale": c.run_id in stale} for c in checkpoints])
        return
    if not checkpoints:
        console.print("No checkpoints match. Train with `slatectl train AGENT --env ENV --save-every N`.")
        return
    console.print(checkpoint_table(checkpoints, promoted, f"{len(checkpoints)} checkpoint(s)", stale))


@app.command("show")
def show_checkpoint(
    ckpt_id: int = typer.Argument(..., metavar="CKPT_ID", min=1, max=MAX_ID, help="Checkpoint id (see `ckpt list`)."),
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
    fields = []
    for key, value in record.items():
        if key in ("id", "run_id"):
            shown = str(value)
        elif key == "size":
            shown = f"{fmt_bytes(value)} ({value:,} bytes)"
        elif key in ("val_return", "test_return", "val_return_std", "test_return_std"):
            shown = fmt_return(value)
        else:
            shown = format_field(key, value)
        fields.append((key, shown))
    fields += [("path", str(path)), ("run", f"{run.id}: {run.agent} on {run.env}, seed {run.seed}, {run_liveness(run)}")]
    print_record(console, f"checkpoint {ckpt_id}", fields)
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
    duplicates = any(c.same_file_as for c in suggestion.candidates)
    columns = [("id", "right"), ("run", "right"), ("agent", "left"), ("step", "right"), ("val return", "right"),
               ("%best", "right")] + ([("same as", "left")] if duplicates else []) + [("", "left")]
    rows = []
    for candidate in suggestion.candidates:
        c = candidate.checkpoint
        share = "" if candidate.share_of_best is None else f"{100 * candidate.share_of_best:.0f}%"
        marks = [m for m, on in (("untrained", candidate.untrained), ("best", c.is_best),
                                 ("← suggested", c.id == suggestion.suggested.id),
                                 ("← chosen", c.id == chosen.id and chosen.id != suggestion.suggested.id)) if on]
        same = [", ".join(str(i) for i in candidate.same_file_as)] if duplicates else []
        rows.append([str(c.id), str(c.run_id), c.agent, f"{c.step:,}", fmt_return(c.val_return_mean, c.val_return_std),
                     share, *same, " ".join(marks)])
    return compact_table(f"{suggestion.quality} candidates for {suggestion.env}", columns, rows, width=console.width,
                         give_way=(("", WRAP), ("same as", WRAP), ("%best", DROP)))


def pick_step(suggestion: Suggestion, step: int) -> Checkpoint:
    matches = [c.checkpoint for c in suggestion.candidates if c.checkpoint.step == step]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        steps = ", ".join(f"{s:,}" for s in sorted({c.checkpoint.step for c in suggestion.candidates}))
        raise BadInput(f"no checkpoint of {suggestion.env} was saved at step {step:,}; saved steps: {steps}.")
    raise BadInput(f"several checkpoints of {suggestion.env} were saved at step {step:,} "
                   f"(ids {', '.join(str(c.id) for c in matches)}); give the id, or narrow with --run or --agent.")


def describe(c: Checkpoint) -> str:
    return f"checkpoint {c.id} ({c.agent}, step {c.step:,}, val return {fmt_return(c.val_return_mean)})"


@app.command("promote")
def promote(
    ckpt_id: Optional[int] = typer.Argument(None, metavar="CKPT_ID", min=1, max=MAX_ID,
                                            help="Checkpoint to promote; omit to see candidates and a suggestion."),
    quality: Quality = typer.Option(..., "--quality", help="medium or expert (random needs no checkpoint and is refused)."),
    env: Optional[str] = typer.Option(None, "--env", metavar="ENV", help="Environment; optional when only one env has checkpoints.", autocompletion=complete_env),
    step: Optional[int] = typer.Option(None, "--step", min=0, max=MAX_STEP, metavar="STEP", help="Promote the checkpoint saved at this step."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Take the suggestion without asking (needed without a terminal)."),
    note: Optional[str] = typer.Option(None, "--note", metavar="TEXT", help="Why this checkpoint; kept in the history."),
    target_fraction: float = typer.Option(0.5, "--target-fraction", metavar="F",
                                          help="Medium rule: target = random + F × (best − random), F strictly between 0 and 1."),
    agent: Optional[str] = typer.Option(None, "--agent", metavar="AGENT", help="Only consider checkpoints of this agent."),
    run: Optional[int] = typer.Option(None, "--run", min=1, max=MAX_ID, metavar="RUN_ID", help="Only consider checkpoints of this run."),
    allow_same: bool = typer.Option(False, "--allow-same", help="Allow the checkpoint already promoted for the other quality (medium and expert the same policy)."),
) -> None:
    """Promote a checkpoint as the medium or expert policy of an env (the previous one stays in history).

    Without CKPT_ID, shows the candidates (step, validation return, share of the best, checkpoints with
    the same file) and suggests one. expert = the highest validation return among trained checkpoints.
    medium = the validation return closest to the target random + F × (best − random): the random
    policy's return (a registered rollout, else simulated once) plus the fraction F (--target-fraction,
    default 0.5 = half-way) of the distance to the best trained checkpoint. Untrained checkpoints (saved
    within the random phase) are never suggested; a warning says when one scores above every trained
    checkpoint, and when the closest checkpoint is still far from the target. In a terminal it asks
    before promoting; without one it needs --yes (take the suggestion), --step or an id. The file's size
    and SHA-256 are checked first; a refused promotion writes nothing.

    Example: slatectl ckpt promote --quality medium --env diffuse_topdown --note "50k of 100k"
    """
    # Everything that can be refused is checked before any work or write.
    quality = check_quality(quality)
    target_fraction = check_target_fraction(target_fraction)
    check_env(env)
    check_agent(agent)
    if ckpt_id is not None and step is not None:
        raise BadInput("give either CKPT_ID or --step, not both.")
    require_writable(get_settings().registry_url, get_settings().home)
    unrecorded_random: float | None = None
    with open_registry(get_settings()) as reg:
        if ckpt_id is not None:
            chosen = reg.get_checkpoint(ckpt_id)
            if env is not None and env != chosen.env:
                raise BadInput(f"checkpoint {ckpt_id} was trained on {chosen.env}, not {env}; promote a checkpoint "
                               f"of {env} (`slatectl ckpt list --env {env}`).")
            if chosen.trained is False:
                err_console.print(f"warning: {describe(chosen)} is untrained (saved within the random phase, before "
                                  "any agent update).")
        else:
            env = resolve_env(reg, env)
            suggestion = reg.suggest_checkpoint(env, quality, target_fraction=target_fraction, agent=agent,
                                                run_id=run, compute_random=random_return_fn, record_random=False)
            unrecorded_random = suggestion.unrecorded_random_return
            chosen = suggestion.suggested if step is None else pick_step(suggestion, step)
            console.print(candidates_table(suggestion, chosen))
            console.print(f"Rule: {suggestion.rule}.")
            if suggestion.random_source:
                console.print(f"Random-policy return: {fmt_return(suggestion.random_return)} ({suggestion.random_source}).")
            for warning in suggestion.warnings:
                err_console.print(f"warning: {warning}")
            if step is None and not yes:
                if not is_interactive():
                    raise BadInput(f"no terminal to confirm in: pass --yes to promote the suggested checkpoint "
                                   f"{chosen.id}, or give a CKPT_ID or --step. Nothing was promoted or recorded.")
                if not typer.confirm(f"Promote {describe(chosen)} as {quality} for {env}?", default=True):
                    console.print("Nothing promoted.")
                    raise typer.Exit(0)
        previous = reg.active_promotion(chosen.env, quality)
        promotion = reg.promote_checkpoint(chosen.env, quality, chosen.id, note, allow_same=allow_same)
        if unrecorded_random is not None:  # measured for this promotion: keep it for next time
            reg.record_policy_return(chosen.env, RANDOM_POLICY, unrecorded_random)
    console.print(f"Promoted {describe(chosen)} as {quality} for {chosen.env} (promotion {promotion.id}).")
    if previous is not None:
        console.print(f"It supersedes promotion {previous.id} (checkpoint {previous.checkpoint_id}), kept in the history.")


@app.command("history")
def history(
    env: Optional[str] = typer.Option(None, "--env", metavar="ENV", help="Only this environment.", autocompletion=complete_env),
    quality: Optional[Quality] = typer.Option(None, "--quality", help="Only this quality."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Every promotion, oldest first, with which is active and what superseded the others.

    Example: slatectl ckpt history --env diffuse_topdown --quality medium --json
    """
    check_env(env)
    with open_registry(get_settings()) as reg:
        promotions = reg.promotion_history(env=env, quality=quality)
    if as_json:
        print_json([promotion_record(p) for p in promotions])
        return
    if not promotions:
        console.print("No promotions yet. Choose one with `slatectl ckpt promote --quality medium|expert`.")
        return
    columns = [("id", "right"), ("env", "left"), ("quality", "left"), ("ckpt", "right"),
               ("promoted at (UTC)", "left"), ("by", "left"), ("status", "left"), ("note", "left")]
    rows = [[str(p.id), p.env, p.quality, str(p.checkpoint_id), iso(p.promoted_at)[:19].replace("T", " "),
             p.promoted_by, "active" if p.active else f"superseded by {p.superseded_by}", p.note or ""]
            for p in promotions]
    table = compact_table("promotion history", columns, rows, width=console.width,
                          give_way=(("status", WRAP), ("promoted at (UTC)", WRAP), ("by", SQUEEZE), ("note", FOLD)))
    console.print(table)
