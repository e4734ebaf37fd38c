"""Write a file so that it either exists complete and durable under its final name, or not at all.

A crash at any point leaves at most a temp file (prefix `.tmp-`) beside the final name; readers never
see a partial file under a final name, and an existing final name is never replaced (unless a caller that
rewrites one file whole, such as a run's metrics log, asks for it with `replace=True`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

TEMP_PREFIX = ".tmp-"

T = TypeVar("T")


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry lives in the directory's own data."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(final: Path, write: Callable[[BinaryIO], T], replace: bool = False) -> T:
    """Run `write(handle)` on a temp file in the final directory, fsync it, rename it into place."""
    directory = final.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=final.suffix)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # Names come from uuid4, so this only trips on a bug; os.replace alone would silently overwrite.
        if final.exists() and not replace:
            raise FileExistsError(f"refusing to overwrite {final}")
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return result


def install_tree(source: Path, final: Path) -> None:
    """Copy the folder `source` to `final` so that `final` appears complete and durable or not at all.

    The copy goes to a temp sibling of `final` (same filesystem), every file and folder in it is fsynced,
    then one rename puts it in place. An existing `final` is never replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise FileExistsError(f"refusing to overwrite {final}")
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=TEMP_PREFIX))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        for path in sorted(staging.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            else:
                fsync_dir(path)
        fsync_dir(staging)
        if final.exists():
            raise FileExistsError(f"refusing to overwrite {final}")
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(final.parent)
