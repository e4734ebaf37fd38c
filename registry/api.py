"""`Registry`: the one object the rest of slatectl uses to record and find runs, checkpoints,
artifacts, promotions and datasets. Each group of operations lives in its own module."""

from __future__ import annotations

from pathlib import Path

from slatectl.registry.artifacts import ArtifactOps
from slatectl.registry.checkpoints import CheckpointOps
from slatectl.registry.core import RegistryCore
from slatectl.registry.datasets import DatasetOps
from slatectl.registry.overview import OverviewOps
from slatectl.registry.promotions import PromotionOps
from slatectl.registry.run_lifecycle import RunLifecycleOps
from slatectl.registry.runs import RunOps
from slatectl.registry.suggest import SuggestOps
from slatectl.registry.verify import VerifyOps
from slatectl.settings import Settings
from slatectl.storage import ArtifactStore


class Registry(RunOps, RunLifecycleOps, CheckpointOps, ArtifactOps, PromotionOps, SuggestOps, DatasetOps, VerifyOps, OverviewOps,
               RegistryCore):
    """Open with `open_registry(settings)`; use as a context manager or call `close()`."""


def open_registry(settings: Settings | None = None, *, home: Path | str | None = None, url: str | None = None,
                  busy_timeout_s: float = 30.0) -> Registry:
    """The registry at `settings` (or at `home` / `url`, resolved like the CLI's --home / --registry-url)."""
    if settings is None:
        settings = Settings.resolve(home, url)
    return Registry(settings.registry_url, ArtifactStore(settings.artifacts_dir), busy_timeout_s=busy_timeout_s)
