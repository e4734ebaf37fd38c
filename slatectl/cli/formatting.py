"""Human-readable numbers for the registry commands' tables: no `None`, no `[]`, no 17-digit floats."""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich import box
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


def compact_table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]],
                  squeezable: Sequence[str] = (), width: int = 80) -> Table:
    """A borderless table that fits `width` characters (80 without a terminal) by shortening only the
    `squeezable` text columns, in the order given (the least telling first: each goes down to 6 characters,
    with an ellipsis, before the next one gives up anything); ids and numbers keep their full width."""
    widths = [max([len(name), *(len(row[index]) for row in rows)]) for index, (name, _) in enumerate(columns)]
    index_of = {name: i for i, (name, _) in enumerate(columns)}
    floor = 6
    excess = sum(widths) + len(columns) + 1 - width  # one space between columns and at both edges
    for name in squeezable:
        if excess <= 0:
            break
        i = index_of[name]
        give = min(excess, max(0, widths[i] - floor))
        widths[i] -= give
        excess -= give
    # The box draws one space between columns; no padding on top of it, so ten columns fit 80 characters.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    for (name, justify), column_width in zip(columns, widths):
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", width=column_width)
    for row in rows:
        table.add_row(*row)
    return table
