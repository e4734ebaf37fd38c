"""Back up and restore an SQLite registry file.

Backup uses SQLite's online backup API (consistent even while other slatectl processes write), into a
temp file that is checked and then published under the target name atomically; an existing target is
never overwritten. Restore validates the backup as a registry first, refuses to replace an existing
registry unless forced, and even then keeps the old file (with its WAL) aside instead of deleting it.
The artifact store (`<home>/artifacts`) is not inside the database: back it up as files.
A PostgreSQL registry is backed up with the server's own tools (pg_dump / pg_restore).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slatectl.errors import BadInput, JobFailed, write_failed
from slatectl.registry.db import SCHEMA_VERSION, display_url, parse_url, sqlite_file
from slatectl.registry.models import TABLES
from slatectl.registry.sqlite_file import VERSION_TABLE, check_registry_file, publish_new_file, read_only_uri, refusal

SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    schema_version: int


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    kept_aside: Path | None
    schema_version: int


def _registry_file(url: str, action: str) -> Path:
    parsed = parse_url(url)
    path = sqlite_file(parsed)
    if path is None:
        if parsed.get_backend_name() == "postgresql":
            raise BadInput(f"the registry {display_url(parsed)} is a PostgreSQL database; {action} it with the server's "
                           "tools: `pg_dump --format=custom --file registry.dump DBNAME` to back up, "
                           "`pg_restore --clean --dbname DBNAME registry.dump` to restore (and copy <home>/artifacts "
                           "as files).")
        raise BadInput(f"the registry {display_url(parsed)} is not an SQLite file, so there is nothing to {action} here.")
    return path


def _schema_version(path: Path) -> int:
    with sqlite3.connect(read_only_uri(path), uri=True) as connection:
        version = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    connection.close()
    if version is None:
        raise refusal(path, "its schema_version table is empty")
    # Every schema version has all of today's tables (migrations add columns only), so any missing one
    # means the file is not a registry, whatever its schema_version table says.
    missing = sorted({table.name for table in TABLES} - tables)
    if missing:
        raise refusal(path, f"it has a {VERSION_TABLE} table but not the registry's tables {', '.join(missing)}")
    return int(version)


def _new_temp(final: Path, purpose: str, outcome: str) -> Path:
    """An empty temp file beside `final`; a folder the system will not write into (read-only, full) is
    the one write-failure message, not an unexpected error."""
    try:
        handle = tempfile.NamedTemporaryFile(dir=final.parent, prefix=f".{final.name}.{purpose}-", delete=False)
    except OSError as exc:
        raise write_failed(final, exc, outcome) from exc
    handle.close()
    return Path(handle.name)


def backup_registry(url: str, target: Path | str, busy_timeout_s: float = 30.0) -> BackupResult:
    """Copy the registry at `url` to the new file `target` (refuses an existing target)."""
    source = _registry_file(url, "back up")
    target = Path(target).expanduser()
    if not source.exists():
        raise BadInput(f"there is no registry at {source} to back up.")
    if target.exists():
        raise BadInput(f"{target} already exists; a backup never overwrites a file. Choose a new name.")
    if not target.parent.is_dir():
        raise BadInput(f"the folder {target.parent} does not exist; create it first or choose another path.")
    check_registry_file(source, busy_timeout_s)
    temp = _new_temp(target, "partial", "nothing was written there")
    try:
        reader = sqlite3.connect(read_only_uri(source), uri=True, timeout=busy_timeout_s)
        copy = sqlite3.connect(temp)
        try:
            reader.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no WAL beside it
            if [row[0] for row in copy.execute("PRAGMA quick_check")] != ["ok"]:
                raise JobFailed(f"the backup copy of {source} failed its integrity check; nothing was written.")
        finally:
            copy.close()
            reader.close()
        if not publish_new_file(temp, target):
            raise BadInput(f"{target} appeared while the backup was written; it was not overwritten.")
    except sqlite3.Error as exc:
        raise JobFailed(f"the backup of {source} failed ({exc}); nothing was written to {target}.") from exc
    except OSError as exc:
        raise JobFailed(f"the backup of {source} could not be written to {target} ({exc.strerror or exc}); "
                        "nothing was left there.") from exc
    finally:
        temp.unlink(missing_ok=True)
    return BackupResult(target, target.stat().st_size, _schema_version(target))


def restore_registry(url: str, backup: Path | str, force: bool = False) -> RestoreResult:
    """Make the backup file the registry at `url`; the current registry (if any, only with `force`) is
    renamed to `<name>.replaced-<UTC stamp>` beside it, never deleted."""
    path = _registry_file(url, "restore")
    backup = Path(backup).expanduser()
    if not backup.is_file():
        raise BadInput(f"the backup {backup} does not exist or is not a file.")
    check_registry_file(backup)
    version = _schema_version(backup)
    if version > SCHEMA_VERSION:
        raise BadInput(f"the backup {backup} has schema version {version}, newer than this slatectl ({SCHEMA_VERSION}); "
                       "upgrade slatectl first.")
    existing = [p for p in (path, *(path.with_name(path.name + s) for s in SIDE_FILES)) if p.exists()]
    if existing and not force:
        raise BadInput(f"a registry already exists at {path}; pass --force to replace it with {backup} (the current "
                       f"file is then kept aside as {path.name}.replaced-<time>, not deleted).")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(path.parent, exc, "the registry was not changed") from exc
    temp = _new_temp(path, "restore", "the registry was not changed")
    kept_aside = None
    try:
        shutil.copyfile(backup, temp)
        check_registry_file(temp)
        if existing:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            kept_aside = path.with_name(f"{path.name}.replaced-{stamp}")
            # The WAL belongs to the old database: it moves with it, or SQLite would replay it into the backup.
            for side in ("", *SIDE_FILES):
                current = path.with_name(path.name + side)
                if current.exists():
                    os.rename(current, kept_aside.with_name(kept_aside.name + side))
        if not publish_new_file(temp, path):
            raise JobFailed(f"a new registry appeared at {path} during the restore; it was left as it is. Stop other "
                            "slatectl commands and run the restore again.")
    except OSError as exc:
        raise JobFailed(f"the restore to {path} failed ({exc.strerror or exc})"
                        + (f"; the previous registry is at {kept_aside}" if kept_aside else "") + ".") from exc
    finally:
        temp.unlink(missing_ok=True)
    return RestoreResult(path, kept_aside, version)
