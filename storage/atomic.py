"""Write a file so that it either exists complete and durable under its final name, or not at all.

A crash at any point leaves at most a temp file (prefix `.tmp-`) beside the final name; readers never
see a partial file under a final name, and an existing final name is never replaced.
"""

from __future__ import annotations

import os
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


def write_atomically(final: Path, write: Callable[[BinaryIO], T]) -> T:
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
        if final.exists():
            raise FileExistsError(f"refusing to overwrite {final}")
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return result
