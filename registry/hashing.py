"""Stable hashes of configurations, so identical configs can be found again. The project's one
`config_hash` (slatectl.config_tools re-exports it)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any] | Any | None) -> str:
    """SHA-256 of the canonical JSON of a config: a mapping, or a dataclass (hashed as its fields)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return hashlib.sha256(canonical_json(dict(config or {})).encode()).hexdigest()
