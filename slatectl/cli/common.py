"""Shared CLI plumbing: consoles, the resolved settings, JSON output, error reporting."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from slatectl.settings import Settings

console = Console()
err_console = Console(stderr=True)

_settings: Settings | None = None


def set_settings(settings: Settings) -> None:
    global _settings
    _settings = settings


def get_settings() -> Settings:
    return _settings if _settings is not None else Settings.resolve()


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else (for scripts)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
