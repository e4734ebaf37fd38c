"""Process-wide settings resolved once from CLI options / environment: where the registry and the
artifact store live, whether to show tracebacks, and how many CPU threads torch may use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from slatectl.errors import BadInput

DEFAULT_HOME = Path(".slatectl")
MAX_THREADS = 1024
DEFAULT_LEASE_S = 120.0  # a lease (run, sweep task, build lock) not renewed for this long belongs to a dead process  # far above any CPU this runs on; a bound so a typo cannot ask for 10**20 threads


@dataclass(frozen=True)
class Settings:
    home: Path
    registry_url: str
    debug: bool = False
    # Torch CPU threads per compute process (each of --jobs K gets this many); None = auto (slatectl/threads.py).
    threads: int | None = None

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @classmethod
    def resolve(cls, home: Path | str | None = None, registry_url: str | None = None, debug: bool = False,
                threads: int | None = None) -> "Settings":
        # An explicitly empty --home / --registry-url is a mistake (an unset variable in a script), not a
        # request for the current folder or the default registry.
        if home is not None and not str(home).strip():
            raise BadInput("--home is empty; give a folder (or leave --home out for ./.slatectl).")
        if registry_url is not None and not registry_url.strip():
            raise BadInput("--registry-url is empty; give a database URL (or leave it out for <home>/registry.db).")
        home_path = Path(home or os.environ.get("SLATECTL_HOME") or DEFAULT_HOME).expanduser()
        url = registry_url or os.environ.get("SLATECTL_REGISTRY_URL") or f"sqlite:///{(home_path / 'registry.db').as_posix()}"
        debug = debug or os.environ.get("SLATECTL_DEBUG", "") not in ("", "0", "false", "False")
        if threads is None:
            threads = parse_threads(os.environ.get("SLATECTL_THREADS"), "SLATECTL_THREADS")
        else:
            threads = parse_threads(threads, "--threads")
        return cls(home=home_path, registry_url=url, debug=debug, threads=threads)


def parse_threads(value: int | str | None, where: str) -> int | None:
    """A thread count in [1, MAX_THREADS], or None when unset (empty string counts as unset)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        raise BadInput(f"{where} must be a whole number of threads in [1, {MAX_THREADS}], got {value!r}.") from None
    if not 1 <= count <= MAX_THREADS:
        raise BadInput(f"{where} must be a whole number of threads in [1, {MAX_THREADS}], got {count}.")
    return count


def lease_seconds() -> float:
    """How long a lease lives without renewal (`SLATECTL_LEASE_S`, default 120 s); holders renew every
    quarter of it. A sweep sets it for its workers (spec `lease_timeout_s`) so a lost worker's runs and
    builds are taken over sooner."""
    value = os.environ.get("SLATECTL_LEASE_S", "").strip()
    if not value:
        return DEFAULT_LEASE_S
    try:
        seconds = float(value)
    except ValueError:
        raise BadInput(f"SLATECTL_LEASE_S must be a number of seconds, got {value!r}.") from None
    if not 4.0 <= seconds <= 86400.0:
        raise BadInput(f"SLATECTL_LEASE_S must lie in [4, 86400] seconds, got {seconds:g}.")
    return seconds
