"""Stable hashes of configurations, so identical configs can be found again."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any] | None) -> str:
    return hashlib.sha256(canonical_json(dict(config or {})).encode()).hexdigest()
