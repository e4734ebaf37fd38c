"""Human-readable numbers for the registry commands' tables: no `None`, no `[]`, no 17-digit floats."""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def fmt_return(value: float | None, std: float | None = None) -> str:
    """Returns with one decimal (and ± std); empty when unknown."""
    if value is None:
        return ""
    return f"{value:,.1f}" if std is None else f"{value:,.1f} ± {std:,.1f}"


def fmt_bytes(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value):,} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{size:,} B"


def format_value(value: Any, digits: int = 4) -> str:
    """A value for a human-readable table: no `None`, `[]` or 17-digit floats leaking from Python;
    counts with thousands separators."""
    if value is None or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.{digits}g}" if abs(value) >= 1e6 else f"{value:,.{min(digits, 3)}f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, digits) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_field(k, v)}" for k, v in value.items()) if value else "—"
    return str(value)


# Fields printed as typed (copyable into a command), and fields that are sizes in bytes.
_VERBATIM = ("id", "seed", "pid", "sha256", "config_hash")
_BYTES = ("size", "disk_bytes", "size_bytes")


def format_field(key: str, value: Any) -> str:
    """`format_value` for one named record field: ids, seeds and hashes verbatim, sizes in kB/MB."""
    if isinstance(value, int) and not isinstance(value, bool):
        if key in _BYTES:
            return fmt_bytes(value)
        if key in _VERBATIM or key.endswith("_id") or key.endswith("seed"):
            return str(value)
    return format_value(value)


def format_settings(flat: dict[str, Any]) -> str:
    """`key=value` pairs of a flattened config, values as one would type them after `--set`."""
    def typed(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(typed(v) for v in value) + "]"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return ", ".join(f"{key}={typed(value)}" for key, value in flat.items()) if flat else "—"


# How a column of `compact_table` gives way when the table is wider than the terminal (tried in the order
# the caller lists them, until the table fits). Names, ids, numbers and paths are never shortened: only free
# text is, and a column that cannot give way is dropped whole (named under the table).
SQUEEZE = "squeeze"  # free text (a time, a user name): cut to 6 characters with an ellipsis
WRAP = "wrap"  # words (flags, headers): wrapped onto more lines at spaces, down to the longest word
FOLD = "fold"  # free text of any length (a note): wrapped, long words folded, down to 6 characters
DROP = "drop"  # the whole column is left out, and the caption says so

_FLOOR = 6


def compact_table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]],
                  give_way: Sequence[tuple[str, str]] = (), width: int = 80,
                  elsewhere: str = "--json has every field") -> Table:
    """A borderless table that fits `width` characters (80 without a terminal): when the cells' full width
    does not fit, the `give_way` columns give way in the order listed ((column, SQUEEZE | WRAP | FOLD |
    DROP)); every other cell keeps its full width, so ids, names and numbers are never cut. A caption names
    dropped columns and says where to see them (`elsewhere`)."""
    index = {name: i for i, (name, _) in enumerate(columns)}
    widths = {name: max([len(name), *(len(row[index[name]]) for row in rows)]) for name, _ in columns}
    kept = [name for name, _ in columns]
    modes: dict[str, str] = {}

    def excess() -> int:  # one space between columns and at both edges
        return sum(widths[name] for name in kept) + len(kept) + 1 - width

    for name, mode in give_way:
        if excess() <= 0:
            break
        if name not in kept:
            continue
        if mode == DROP:
            kept.remove(name)
            continue
        cells = [name, *(row[index[name]] for row in rows)]
        floor = max(len(word) for cell in cells for word in cell.split() or [""]) if mode == WRAP else _FLOOR
        give = min(excess(), max(0, widths[name] - floor))
        if give:
            widths[name] -= give
            modes[name] = mode
    # The box draws one space between columns; no padding on top of it, so ten columns fit 80 characters.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    dropped = [name for name, _ in columns if name not in kept]
    if dropped:
        table.caption = f"not shown at {width} columns: {', '.join(dropped)} ({elsewhere})"
    for name, justify in columns:
        if name in kept:
            mode = modes.get(name)
            table.add_column(name, justify=justify, width=widths[name], no_wrap=mode in (None, SQUEEZE),
                             overflow="ellipsis" if mode == SQUEEZE else "fold")
    for row in rows:
        table.add_row(*(row[index[name]] for name in kept))
    return table


def print_record(console: Console, title: str, fields: Sequence[tuple[str, str]]) -> None:
    """A record as `key  value` lines under its title. A value that is one long token (a path, a SHA-256,
    a config hash) and does not fit beside its key goes whole on its own line below the key, unwrapped, so
    it can be copied; free text wraps at spaces under its value column."""
    console.print(title, style="bold", highlight=False)
    key_width = max((len(key) for key, _ in fields), default=0)
    value_width = max(console.width - key_width - 2, 20)
    grid: Table | None = None
    for key, value in fields:
        if len(value) > value_width and not any(ch.isspace() for ch in value):
            if grid is not None:
                console.print(grid)
                grid = None
            console.print(key, highlight=False)
            console.print(f"  {value}", highlight=False, crop=False, soft_wrap=True)
            continue
        if grid is None:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True, width=key_width)
            grid.add_column(overflow="fold")
        grid.add_row(key, value)
    if grid is not None:
        console.print(grid)
