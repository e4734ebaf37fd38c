"""`slatectl registry ...`: integrity of the registry and its artifact store."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from slatectl.registry import open_registry
from slatectl.cli.common import console, err_console, get_settings, print_json
from slatectl.errors import BadInput

app = typer.Typer(help="The registry itself: verify that every recorded file is present and intact.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The registry itself: verify that every recorded file is present and intact."""


@app.command("verify")
def verify(
    fix: bool = typer.Option(False, "--fix", help="Remove orphan files (files no row refers to). Never touches rows or recorded files."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Check every recorded file against its size and SHA-256, and list orphan files in the store.

    Exits 2 when a recorded file is missing or corrupted; orphans alone exit 0 (remove them with --fix).

    Example: slatectl registry verify --fix
    """
    with open_registry(get_settings()) as reg:
        report = reg.verify(fix=fix)
        root = reg.store.root
    if as_json:
        print_json({"ok": report.ok, "checked": report.checked, "problems": [asdict(p) for p in report.problems],
                    "orphans": report.orphans, "in_progress": report.in_progress, "removed": report.removed})
    else:
        console.print(f"Checked {report.checked} recorded file(s) in {root}.")
        if report.problems:
            table = Table(title="recorded files that cannot be used")
            for column in ("kind", "id", "file", "problem"):
                table.add_column(column)
            for p in report.problems:
                table.add_row(p.kind, str(p.row_id), p.key, p.problem)
            console.print(table)
        for key in report.orphans:
            state = "removed" if key in report.removed else "no row refers to it"
            console.print(f"orphan file {key}: {state}")
        for key in report.in_progress:
            console.print(f"temp file {key}: a write may still be in progress; left alone")
        if report.orphans and not fix:
            err_console.print(f"{len(report.orphans)} orphan file(s); `slatectl registry verify --fix` removes them.")
        if report.ok and not report.orphans:
            console.print("All files present and matching their SHA-256.")
    if not report.ok:
        raise BadInput(f"{len(report.problems)} recorded file(s) are missing or corrupted "
                       f"({', '.join(f'{p.kind} {p.row_id}' for p in report.problems[:10])}). Restore them from a "
                       "backup or re-create those artifacts; the rows were left unchanged.")
