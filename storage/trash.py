"""The trash: files slatectl takes out of the store are moved here, never unlinked, with a log saying
what each was and why it was moved. Empty it by hand once you are sure (`rm -r <home>/trash/<stamp>`).

Layout: `<home>/trash/<UTC stamp>/<original relative path>` plus `<UTC stamp>/log.tsv` with one line per
file: moved-at, relative path, size in bytes, reason, original path.
"""

from __future__ import annotations

import errno
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from slatectl.storage.atomic import fsync_dir

LOG_NAME = "log.tsv"


def new_trash_folder(trash_root: Path) -> Path:
    """A fresh `<trash_root>/<UTC stamp>` folder (a suffix keeps two moves in one second apart)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    trash_root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        folder = trash_root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"could not create a new folder in {trash_root}")


def move_to_trash(folder: Path, items: Sequence[tuple[Path, str]], reason: str) -> list[Path]:
    """Move each (source, relative name) into `folder`, logging it; returns the new paths.

    A source that vanished meanwhile is skipped. Moves stay on one filesystem when they can (a rename);
    across filesystems the file is copied, fsynced, then the source removed.
    """
    moved = []
    with open(folder / LOG_NAME, "a", encoding="utf-8") as log:
        for source, relative in items:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = source.stat().st_size if source.is_file() else _tree_size(source)
                _move(source, target)
            except FileNotFoundError:
                continue
            moved.append(target)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            log.write(f"{now}\t{relative}\t{size}\t{reason}\t{source}\n")
            log.flush()
            os.fsync(log.fileno())
            fsync_dir(target.parent)
            fsync_dir(source.parent)
    return moved


def _move(source: Path, target: Path) -> None:
    if target.exists():
        raise FileExistsError(f"refusing to overwrite {target}")
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(str(source), str(target))


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
