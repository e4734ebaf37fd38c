"""Human-readable numbers for the registry commands' tables: no `None`, no `[]`, no 17-digit floats."""

from __future__ import annotations

from typing import Any


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


def fmt_value(value: Any) -> str:
    """One table cell for a JSON-record value: ints with separators, floats with up to 3 decimals,
    lists comma-joined, None / empty as blank."""
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value)
    return str(value)
