"""Is this file a slatectl registry? Checked before SQLAlchemy ever opens it, so a damaged or foreign
file is refused with a clear message instead of being "repaired" into an empty registry.

A registry file that exists is only ever opened, never created over: a 0-byte file (a crash while
copying, a full disk), garbage, a truncated copy or another program's SQLite database all stop slatectl
with `BadInput` naming the file and the remedy. New registries are built complete in a temp file and
published with one atomic link (see `publish_new_file`), so no process ever sees a half-created one.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from slatectl.errors import BadInput
from slatectl.storage.atomic import fsync_dir

SQLITE_HEADER = b"SQLite format 3\x00"
VERSION_TABLE = "schema_version"


class NotARegistry(BadInput):
    """The file at the registry's path cannot be used as a registry (exit 2)."""


def refusal(path: Path, reason: str) -> NotARegistry:
    return NotARegistry(
        f"the registry file {path} is not a valid slatectl registry ({reason}). slatectl will neither use nor "
        f"re-create it, so nothing recorded can be lost. Restore it from a backup with `slatectl registry restore "
        f"BACKUP --force` (the damaged file is kept aside), or move it away to start an empty registry.")


def _has_wal_content(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:  # absent, or its folder is not a folder (then nothing can be created there either)
        return False


def refuse_orphan_wal(path: Path) -> None:
    """A WAL without its database means the registry was deleted or moved without it: a new registry
    created here could replay those foreign pages, and the old commits would be lost. Refuse instead."""
    if _has_wal_content(path):
        raise refusal(path, f"the file is missing but its write-ahead log {path.name}-wal is still there; the registry "
                            "was moved or deleted without it")


def is_writable(path: Path) -> bool:
    """Can this process write the registry file and create its WAL beside it? False on a read-only
    filesystem or an immutable file or folder (`access(2)` says so even to root)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def sqlite_uri(path: Path) -> str:
    """The URI SQLite opens the registry file with: read-write where it can be written, else read-only.
    Read-only SQLite still wants to create the WAL's index beside a WAL-mode file; where nothing can be
    created and no WAL holds commits, the file alone is the whole database and is opened as immutable."""
    return f"file:{path.as_posix()}?mode=rw" if is_writable(path) else read_only_uri(path)


def read_only_uri(path: Path) -> str:
    """A URI that reads the file without writing anything, also where nothing can be written."""
    if is_writable(path) or _has_wal_content(path):
        return f"file:{path.as_posix()}?mode=ro"
    return f"file:{path.as_posix()}?mode=ro&immutable=1"


class RegistryUnavailable(BadInput):
    """An SQLite registry file that looks intact but cannot be opened here (read-only, full, ulimit -f)."""


_UNAVAILABLE = ("unable to open", "disk i/o error", "readonly", "read-only", "disk is full", "file too large")


def check_registry_file(path: Path, busy_timeout_s: float = 30.0) -> None:
    """Raise NotARegistry unless `path` is a readable, intact SQLite database holding a slatectl schema;
    RegistryUnavailable when it looks intact but the system will not let SQLite open it."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except IsADirectoryError:
        raise refusal(path, "it is a folder") from None
    except OSError as exc:
        raise refusal(path, f"it cannot be read: {exc.strerror or exc}") from exc
    if not header and not _has_wal_content(path):
        raise refusal(path, "the file is empty (0 bytes)")
    if header and header != SQLITE_HEADER:
        raise refusal(path, "it is not an SQLite database: the file header is wrong")
    try:
        connection = sqlite3.connect(sqlite_uri(path), uri=True, timeout=busy_timeout_s)
    except sqlite3.Error as exc:
        raise unavailable(path, exc) if _is_unavailable(exc) else refusal(path, f"SQLite cannot open it: {exc}") from exc
    try:
        rows = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if rows != ["ok"]:
            raise refusal(path, f"PRAGMA quick_check failed: {'; '.join(str(r) for r in rows[:3])}")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            raise BadInput(f"the registry file {path} stayed locked by another process for {busy_timeout_s:g} s; "
                           "try again when the other slatectl command has finished.") from exc
        if _is_unavailable(exc):
            raise unavailable(path, exc) from exc
        raise refusal(path, f"SQLite cannot read it: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise refusal(path, f"SQLite cannot read it: {exc}") from exc
    finally:
        connection.close()
    if VERSION_TABLE not in tables:
        what = "no tables at all" if not tables else f"tables {', '.join(sorted(tables)[:5])} but no {VERSION_TABLE}"
        raise refusal(path, f"it is an SQLite database with {what}, not a slatectl registry")


def _is_unavailable(exc: sqlite3.Error) -> bool:
    return any(marker in str(exc).lower() for marker in _UNAVAILABLE)


def unavailable(path: Path, exc: BaseException) -> RegistryUnavailable:
    """The system, not the file, is in the way: say so, and do not suggest replacing the file."""
    return RegistryUnavailable(
        f"the registry file {path} starts like an intact SQLite database, but SQLite could not open it here "
        f"({exc}): its folder may be read-only, the disk full, or the file-size limit (`ulimit -f`) too small. "
        "Nothing was changed; the file is not damaged by this.")


def publish_new_file(temp: Path, final: Path) -> bool:
    """Give the complete file `temp` the name `final` unless `final` exists; True if it was published.

    `os.link` fails when the name is taken, so two processes creating the registry at once never
    replace each other's file: the loser discards its copy and opens the winner's. The file gets the
    permissions a plainly created file would have (temp files are private to their creator).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(temp, final)
        published = True
    except FileExistsError:
        published = False
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return published
