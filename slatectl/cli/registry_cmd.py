"""`slatectl registry ...`: the registry itself — verify its files, back it up and restore it, and give
back disk space nothing needs (`gc`)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from slatectl.cli.common import console, err_console, get_settings, print_json
from slatectl.cli.formatting import fmt_bytes
from slatectl.errors import BadInput
from slatectl.registry import backup_registry, open_registry, restore_registry
from slatectl.registry.verify import refuse_when_registry_looks_empty
from slatectl.storage.scratch import SCRATCH_GRACE_S

app = typer.Typer(help="The registry itself: verify its files, back it up, restore it, collect garbage.",
                  no_args_is_help=True)

MAX_KEEP = 1000
MAX_SCRATCH_HOURS = 24 * 365


@app.callback()
def _group() -> None:
    """The registry itself: verify its files, back it up, restore it, collect garbage."""


def is_interactive() -> bool:
    return sys.stdin.isatty()


def confirm_or_refuse(question: str, yes: bool, what: str) -> bool:
    """True to go ahead: --yes, or the person said yes in a terminal. Without either: BadInput (exit 2)."""
    if yes:
        return True
    if not is_interactive():
        raise BadInput(f"no terminal to confirm in: pass --yes to {what}. Nothing was changed.")
    return typer.confirm(question, default=False)


@app.command("verify")
def verify(
    fix: bool = typer.Option(False, "--fix", help="Move orphan files (files no row refers to) to <home>/trash/<time>/ "
                                                  "with a log, and delete scratch leftovers of killed `collect` runs. "
                                                  "Asks first. Never touches rows or recorded files."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --fix: do it without asking (needed without a terminal)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Check every recorded file against its size and SHA-256, and list orphan files in the store and
    scratch leftovers of killed `collect` runs.

    Exits 2 when a recorded file is missing or corrupted; orphans alone exit 0. --fix never deletes an
    orphan: it moves it to <home>/trash/<time>/ (log.tsv says what and why), and refuses when the
    registry records no files at all (the wrong or an emptied registry). Files with names slatectl never
    gives (.DS_Store, "has space.pt") are listed as foreign and left where they are.

    Example: slatectl registry verify --fix
    """
    with open_registry(get_settings()) as reg:
        report = reg.verify(fix=False)
        root = reg.store.root
        if fix and (report.orphans or report.scratch):
            if report.orphans and report.checked == 0 and not reg.list_artifacts(include_pruned=True):
                refuse_when_registry_looks_empty({}, report.orphans, reg.url)
            question = (f"Move {len(report.orphans)} orphan file(s) to {reg.trash_dir} and delete "
                        f"{len(report.scratch)} scratch leftover(s)?")
            _print_verify(report, root, fix=False)
            if not confirm_or_refuse(question, yes, "move the orphans to the trash"):
                console.print("Nothing moved.")
                raise typer.Exit(0 if report.ok else 2)
            report = reg.verify(fix=True)
    if as_json:
        print_json({"ok": report.ok, "checked": report.checked, "problems": [asdict(p) for p in report.problems],
                    "orphans": report.orphans, "in_progress": report.in_progress, "foreign": report.foreign,
                    "removed": report.removed,
                    "trash": report.trash, "scratch": [str(s.path) for s in report.scratch],
                    "scratch_removed": report.scratch_removed})
    else:
        _print_verify(report, root, fix)
    if not report.ok:
        raise BadInput(f"{len(report.problems)} recorded file(s) are missing or corrupted "
                       f"({', '.join(f'{p.kind} {p.row_id}' for p in report.problems[:10])}). Restore them from a "
                       "backup or re-create those artifacts; the rows were left unchanged.")


def _print_verify(report, root: Path, fix: bool) -> None:
    console.print(f"Checked {report.checked:,} recorded file(s) in {root}.")
    if report.problems:
        table = Table(title="recorded files that cannot be used")
        for column in ("kind", "id", "file", "problem"):
            table.add_column(column)
        for p in report.problems:
            table.add_row(p.kind, str(p.row_id), p.key, p.problem)
        console.print(table)
    for key in report.orphans:
        state = f"moved to {report.trash}" if key in report.removed else "no row refers to it"
        console.print(f"orphan file {key}: {state}")
    for key in report.in_progress:
        console.print(f"temp file {key}: a write may still be in progress; left alone")
    for key in report.foreign:
        console.print(f"foreign file {root / key}: not a name slatectl gives its files; left alone (move it "
                      "out of the store yourself)", highlight=False)
    for leftover in report.scratch:
        state = "deleted" if str(leftover.path) in report.scratch_removed else \
            f"unchanged for {leftover.idle_s / 3600:,.1f} h"
        console.print(f"scratch leftover {leftover.path} ({fmt_bytes(leftover.size)}): {state}")
    if (report.orphans or report.scratch) and not fix:
        err_console.print(f"{len(report.orphans)} orphan file(s), {len(report.scratch)} scratch leftover(s); "
                          "`slatectl registry verify --fix` moves the orphans to the trash and deletes the leftovers.")
    if report.ok and not report.orphans:
        console.print("All files present and matching their SHA-256.")


@app.command("backup")
def backup(
    path: Path = typer.Argument(..., metavar="PATH", help="The backup file to create (must not exist)."),
) -> None:
    """Copy the SQLite registry to a new file with SQLite's online backup API: consistent even while
    other slatectl commands write, checked, and published atomically; an existing file is never
    overwritten. The artifact store (<home>/artifacts) is files: copy it too (e.g. `rsync -a`). For a
    PostgreSQL registry this prints the pg_dump command to use and exits 2.

    Example: slatectl registry backup backups/registry-2026-11-26.db
    """
    result = backup_registry(get_settings().registry_url, path)
    console.print(f"Backed up the registry (schema v{result.schema_version}, {fmt_bytes(result.size)}) to {result.path}.")
    console.print(f"Back up the files too: {get_settings().artifacts_dir} (e.g. `rsync -a`).")


@app.command("restore")
def restore(
    path: Path = typer.Argument(..., metavar="PATH", help="A backup made by `slatectl registry backup`."),
    force: bool = typer.Option(False, "--force", help="Replace an existing registry; it is kept aside as "
                                                      "registry.db.replaced-<time>, never deleted."),
) -> None:
    """Restore the registry from a backup. The backup is checked first (a valid registry, intact, not from a
    newer slatectl); an existing registry is replaced only with --force, and even then kept aside. Stop
    other slatectl commands first; afterwards run `slatectl registry verify`.

    Example: slatectl registry restore backups/registry-2026-11-26.db --force
    """
    result = restore_registry(get_settings().registry_url, path, force=force)
    console.print(f"Restored {path} (schema v{result.schema_version}) as {result.path}.")
    if result.kept_aside is not None:
        console.print(f"The previous registry is kept at {result.kept_aside}.")
    console.print("Check the files against it with `slatectl registry verify`.")


@app.command("gc")
def gc(
    yes: bool = typer.Option(False, "--yes", "-y", help="Act; without it nothing is removed (dry run)."),
    keep: int = typer.Option(1, "--keep", min=1, max=MAX_KEEP, metavar="K",
                             help=f"Resume states kept per run, newest first (1 to {MAX_KEEP})."),
    scratch_hours: float = typer.Option(SCRATCH_GRACE_S / 3600, "--scratch-older-than", metavar="HOURS",
                                        min=0.0, max=float(MAX_SCRATCH_HOURS),
                                        help="Scratch leftovers unchanged for at least this long are removed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Give back disk that nothing needs: superseded resume states (all but the newest --keep per run;
    only the newest is ever used by `train --resume`; their rows stay as history), files of interrupted
    prunes, and scratch leftovers of killed `collect` runs. A dry run unless --yes. Checkpoints, datasets
    and other artifacts are never touched.

    Example: slatectl registry gc --yes
    """
    with open_registry(get_settings()) as reg:
        report = reg.gc(apply=yes, keep_resume_states=keep, scratch_older_than_s=scratch_hours * 3600)
    if as_json:
        print_json({"applied": report.applied, "reclaimed_bytes": report.reclaimed_bytes,
                    "resume_states": [{"id": a.id, "run_id": a.run_id, "step": a.config.get("step"), "size": a.size}
                                      for a in report.superseded],
                    "lingering_files": [a.storage_key for a in report.lingering],
                    "scratch": [str(s.path) for s in report.scratch]})
        return
    verb = "Removed" if yes else "Would remove"
    for a in report.superseded:
        console.print(f"{verb} resume state {a.id} of run {a.run_id} (step {int(a.config.get('step', 0)):,}, "
                      f"{fmt_bytes(a.size)})")
    for a in report.lingering:
        console.print(f"{verb} the file of pruned resume state {a.id} ({fmt_bytes(a.size)})")
    for s in report.scratch:
        console.print(f"{verb} scratch leftover {s.path} ({fmt_bytes(s.size)})")
    total = fmt_bytes(report.reclaimed_bytes)
    if not (report.superseded or report.lingering or report.scratch):
        console.print("Nothing to remove.")
    elif yes:
        console.print(f"Freed {total}.")
    else:
        console.print(f"{total} can be freed; run `slatectl registry gc --yes` to remove them.")
