"""Scratch leftovers: the temp folders that `collect` works in under `<home>/scratch/` and that a
killed collection leaves behind. They never hold anything registered (a dataset is registered only after
its file was copied into the store), so `registry gc` / `registry verify --fix` delete them once they
are older than a grace period that no live collection reaches without touching its folder."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# A collection writes its scratch folder at the start and again when it exports; six hours without any
# change means its process is gone.
SCRATCH_GRACE_S = 6 * 3600


@dataclass(frozen=True)
class Leftover:
    path: Path
    size: int
    idle_s: float  # seconds since anything in it changed


def _newest_change_and_size(path: Path) -> tuple[float, int]:
    newest, size = path.lstat().st_mtime, 0
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            try:
                stat = child.lstat()
            except FileNotFoundError:
                continue
            newest = max(newest, stat.st_mtime)
            if child.is_file():
                size += stat.st_size
    else:
        size = path.lstat().st_size
    return newest, size


def scratch_leftovers(scratch_dir: Path, older_than_s: float = SCRATCH_GRACE_S) -> list[Leftover]:
    """Entries of `scratch_dir` unchanged for at least `older_than_s` seconds."""
    if not scratch_dir.is_dir():
        return []
    now = time.time()
    found = []
    for entry in sorted(scratch_dir.iterdir()):
        try:
            newest, size = _newest_change_and_size(entry)
        except FileNotFoundError:
            continue
        if now - newest >= older_than_s:
            found.append(Leftover(entry, size, now - newest))
    return found


def remove_leftover(leftover: Leftover) -> None:
    if leftover.path.is_dir() and not leftover.path.is_symlink():
        shutil.rmtree(leftover.path, ignore_errors=True)
    else:
        leftover.path.unlink(missing_ok=True)
