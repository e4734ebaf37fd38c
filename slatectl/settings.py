"""Where the registry and the artifact store live (resolved once from CLI options / environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path(".slatectl")


@dataclass(frozen=True)
class Settings:
    home: Path
    registry_url: str
    debug: bool = False

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @classmethod
    def resolve(cls, home: Path | str | None = None, registry_url: str | None = None, debug: bool = False) -> "Settings":
        home_path = Path(home or os.environ.get("SLATECTL_HOME") or DEFAULT_HOME).expanduser()
        url = registry_url or os.environ.get("SLATECTL_REGISTRY_URL") or f"sqlite:///{(home_path / 'registry.db').as_posix()}"
        debug = debug or os.environ.get("SLATECTL_DEBUG", "") not in ("", "0", "false", "False")
        return cls(home=home_path, registry_url=url, debug=debug)
