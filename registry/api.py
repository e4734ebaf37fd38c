"""`Registry`: the one object the rest of slatectl uses to record and find runs, checkpoints,
artifacts, promotions and datasets. Each group of operations lives in its own module."""

from __future__ import annotations

from pathlib import Path

from registry.artifacts import ArtifactOps
from registry.checkpoints import CheckpointOps
from registry.core import RegistryCore
from registry.datasets import DatasetOps
from registry.overview import OverviewOps
from registry.promotions import PromotionOps
from registry.runs import RunOps
from registry.suggest import SuggestOps
from registry.verify import VerifyOps
from slatectl.settings import Settings
from storage import ArtifactStore


class Registry(RunOps, CheckpointOps, ArtifactOps, PromotionOps, SuggestOps, DatasetOps, VerifyOps, OverviewOps,
               RegistryCore):
    """Open with `open_registry(settings)`; use as a context manager or call `close()`."""


def open_registry(settings: Settings | None = None, *, home: Path | str | None = None, url: str | None = None,
                  busy_timeout_s: float = 30.0) -> Registry:
    """The registry at `settings` (or at `home` / `url`, resolved like the CLI's --home / --registry-url)."""
    if settings is None:
        settings = Settings.resolve(home, url)
    return Registry(settings.registry_url, ArtifactStore(settings.artifacts_dir), busy_timeout_s=busy_timeout_s)
