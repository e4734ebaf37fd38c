"""Engine, connection settings, schema creation and migrations, and database-error translation.

SQLite is the default and is used by several processes at once (parallel training runs), so:
WAL (readers never block the writer), a long busy timeout, and every write transaction opened with
`BEGIN IMMEDIATE` so writers queue for the lock up front instead of failing on a read-to-write upgrade.
An SQLite registry file is checked before it is opened and created only where no file exists
(`slatectl.registry.sqlite_file`).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import (Boolean, Connection, DateTime, Engine, Integer, String, create_engine, event, func, insert, inspect,
                        select, text)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from slatectl.errors import BadInput, JobFailed
from slatectl.registry.models import TABLES, BuildLock, Checkpoint, Run, SchemaVersion, Sweep, SweepTask, utcnow
from slatectl.registry.sqlite_file import check_registry_file, is_writable, publish_new_file, refuse_orphan_wal, sqlite_uri
from slatectl.registry.training_state import trained_at_step

SCHEMA_VERSION = 4

WRITE_OPTION = "slatectl_write"
_SCHEMA_LOCK_KEY = 0x5_1A7E_C71  # PostgreSQL advisory lock id for schema creation / migration


def display_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput(f"--registry-url {url!r} is not a database URL (e.g. sqlite:///path/registry.db "
                       "or postgresql+psycopg://user@host/db).") from exc
    # A bare postgresql:// means psycopg2 to SQLAlchemy; use psycopg 3, the driver this project ships with.
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_file(url: URL) -> Path | None:
    """The file of an on-disk SQLite URL; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def require_writable(url: str, home: Path | None = None) -> None:
    """For commands that write, before any work. BadInput unless `url` is a registry that outlives the
    process: an in-memory SQLite database (`sqlite://`, `:memory:`, `mode=memory`) vanishes when the
    command ends, so a command that writes would report ids of rows that no longer exist and leave their
    files orphaned in the store. BadInput too when the SQLite file or the home cannot be written
    (a read-only filesystem): reading commands still work there."""
    parsed = parse_url(url)
    path = sqlite_file(parsed)
    for place in ([path] if path is not None and path.exists() else []) + ([home] if home is not None else []):
        if place.exists() and not (is_writable(place) if place.is_file() else os.access(place, os.W_OK)):
            raise BadInput(f"{place} is read-only here, so this command could record nothing; commands that only "
                           "read (inspect, ckpt list, registry verify) work. Use a writable --home.")
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in database or parsed.query.get("mode") == "memory":
        raise BadInput(f"--registry-url {display_url(parsed)} is an in-memory database: everything this command "
                       "records would vanish when it ends (its files left orphaned). Use a file, e.g. "
                       "sqlite:///path/registry.db, or leave --registry-url out for <home>/registry.db.")


def make_engine(url: str | URL, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for `url`. Opens existing databases only; see `open_engine` for the checked entry point."""
    parsed = parse_url(url) if isinstance(url, str) else url
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        if sqlite_file(parsed) is None:  # one shared connection, or each would see its own empty database
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise BadInput(f"no database driver for {display_url(parsed)} ({exc}). SQLite needs nothing; for "
                       "PostgreSQL install psycopg (`pip install 'psycopg[binary]'`).") from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, busy_timeout_s, read_only="mode=ro" in (parsed.database or ""))
    return engine


def open_engine(url: str, busy_timeout_s: float = 30.0) -> tuple[Engine, int]:
    """The engine of a usable registry and its schema version.

    SQLite: a missing file is created (complete, atomically); an existing file must be a valid registry
    (`check_registry_file`) and is never re-created. Other databases: the schema is created when absent.
    """
    parsed = parse_url(url)
    path = sqlite_file(parsed)
    if path is not None:
        if not path.exists():
            refuse_orphan_wal(path)
            _create_sqlite_registry(path, busy_timeout_s)
        check_registry_file(path, busy_timeout_s)
        if not is_writable(path):  # a read-only home: reading commands work, writes fail with a clear message
            parsed = URL.create("sqlite", database=sqlite_uri(path.resolve()), query={"uri": "true"})
    engine = make_engine(parsed, busy_timeout_s)
    try:
        with database_errors(display_url(parsed), busy_timeout_s):
            version = ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine, version


def _create_sqlite_registry(path: Path, busy_timeout_s: float) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.new-", delete=False)
        handle.close()
    except OSError as exc:
        raise BadInput(f"cannot create the registry folder {folder} ({exc.strerror or exc}); choose another --home "
                       "or --registry-url.") from exc
    temp = Path(handle.name)
    try:
        engine = make_engine(URL.create("sqlite", database=str(temp)), busy_timeout_s)
        try:
            with database_errors(str(temp), busy_timeout_s):
                ensure_schema(engine)
        finally:
            engine.dispose()  # closing the last connection checkpoints the WAL into the file
        publish_new_file(temp, path)
    except OSError as exc:
        raise JobFailed(f"could not create the registry {path} ({exc.strerror or exc}); nothing was recorded. "
                        "Free disk space or choose another --home.") from exc
    finally:
        for leftover in (temp, temp.with_name(temp.name + "-wal"), temp.with_name(temp.name + "-shm")):
            leftover.unlink(missing_ok=True)


def _configure_sqlite(engine: Engine, busy_timeout_s: float, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below instead of pysqlite's own BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # Switching to WAL takes an exclusive lock; skip it when the file is already in WAL (it persists)
        # or can only be read (an immutable file reports its journal mode as "delete").
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal" and not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL: a power cut may lose the last commits but never corrupts; files are fsynced first,
        # so a lost commit leaves an orphan file (reported by verify), never a row without a file.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def writer(engine: Engine) -> Engine:
    """The same engine, whose transactions are write transactions (BEGIN IMMEDIATE on SQLite)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def serialize_on(session: Session, key: str, shared: bool = False) -> None:
    """Serialise writers that touch the same thing. SQLite's BEGIN IMMEDIATE already serialises all
    writers; PostgreSQL (read committed) gets a transaction-scoped advisory lock on the key."""
    if session.get_bind().dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    session.execute(text(f"SELECT {function}(hashtext(:key))"), {"key": key})


# -- schema --------------------------------------------------------------------------------------------

def _current_version(connection: Connection) -> int | None:
    if not inspect(connection).has_table(SchemaVersion.__tablename__):
        return None
    return connection.execute(select(func.max(SchemaVersion.__table__.c.version))).scalar()


def ensure_schema(engine: Engine) -> int:
    """Create the tables and the version row on first use, run pending migrations; return the version."""
    with engine.connect() as connection:
        version = _current_version(connection)
    if version == SCHEMA_VERSION:
        return version
    _refuse_newer(version)
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        version = _current_version(connection)  # another process may have done it meanwhile
        _refuse_newer(version)
        if version is None:
            for table in TABLES:
                table.create(connection, checkfirst=True)
            _record_version(connection, SCHEMA_VERSION)
        else:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](connection)
                _record_version(connection, target)
    return SCHEMA_VERSION


def _record_version(connection: Connection, version: int) -> None:
    connection.execute(insert(SchemaVersion.__table__).values(version=version, applied_at=utcnow()))


def _refuse_newer(version: int | None) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise BadInput(f"the registry has schema version {version} but this slatectl knows only up to "
                       f"{SCHEMA_VERSION}; upgrade slatectl before using this registry.")


def _add_column(connection: Connection, table: str, name: str, sql_type: Any) -> None:
    compiled = sql_type.compile(dialect=connection.dialect)
    connection.execute(text(f'ALTER TABLE {table} ADD COLUMN {name} {compiled}'))


def _migrate_to_2(connection: Connection) -> None:
    """v2: run leases (pid, host, heartbeat_at), checkpoints' `trained`, artifacts' `pruned_at`."""
    _add_column(connection, "runs", "pid", Integer())
    _add_column(connection, "runs", "host", String())
    _add_column(connection, "runs", "heartbeat_at", DateTime(timezone=False))
    _add_column(connection, "checkpoints", "trained", Boolean())
    _add_column(connection, "artifacts", "pruned_at", DateTime(timezone=False))
    # Existing checkpoints: trained unless saved within the run's random phase (the loop's rule).
    checkpoints, runs = Checkpoint.__table__, Run.__table__
    rows = connection.execute(select(checkpoints.c.id, checkpoints.c.step, runs.c.config)
                              .join(runs, checkpoints.c.run_id == runs.c.id)).all()
    for checkpoint_id, step, config in rows:
        connection.execute(checkpoints.update().where(checkpoints.c.id == checkpoint_id)
                           .values(trained=trained_at_step(step, config)))


def _migrate_to_3(connection: Connection) -> None:
    """v3: runs' `group_id` (the population a run was trained in), indexed; NULL for earlier runs."""
    _add_column(connection, "runs", "group_id", String())
    connection.execute(text("CREATE INDEX IF NOT EXISTS ix_runs_group_id ON runs (group_id)"))


def _migrate_to_4(connection: Connection) -> None:
    """v4: sweeps, their tasks, and the build locks of shared inputs (new tables; nothing else changes)."""
    for model in (Sweep, SweepTask, BuildLock):
        model.__table__.create(connection, checkfirst=True)


# MIGRATIONS[v] upgrades a database at version v-1 to v, inside the schema transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _migrate_to_2, 3: _migrate_to_3, 4: _migrate_to_4}


# -- errors -------------------------------------------------------------------------------------------

_CORRUPT = ("malformed", "not a database", "file is encrypted", "database corrupt")
_DISK = ("disk is full", "disk i/o error", "no space left", "file too large", "readonly database", "read-only")


@contextmanager
def database_errors(url: str, busy_timeout_s: float) -> Iterator[None]:
    """Turn every driver error into one clear SlatectlError: BadInput (exit 2) when the database cannot
    be reached or is damaged (the user's remedy), JobFailed (exit 1) when a write failed (disk full…)."""
    try:
        yield
    except SQLAlchemyError as exc:
        text_of_error = str(getattr(exc, "orig", None) or exc).strip()
        reason = text_of_error.splitlines()[0] if text_of_error else type(exc).__name__
        lowered = reason.lower()
        if isinstance(exc, OperationalError) and ("locked" in lowered or "busy" in lowered):
            raise BadInput(f"the registry database {url} stayed locked by another process for {busy_timeout_s:g} s "
                           f"({reason}); nothing was changed. Try again when the other slatectl command has "
                           "finished.") from exc
        if "readonly" in lowered or "read-only" in lowered:
            raise JobFailed(f"the registry database {url} is read-only here ({reason}); nothing was registered. "
                            "Commands that only read work; to record anything use a writable --home.") from exc
        if any(marker in lowered for marker in _DISK):
            raise JobFailed(f"the registry database {url} could not be written ({reason}); the transaction was "
                            "rolled back and nothing was registered. Free disk space (or fix permissions) and run "
                            "the command again.") from exc
        if isinstance(exc, DatabaseError) and any(marker in lowered for marker in _CORRUPT):
            raise BadInput(f"the registry database {url} is damaged ({reason}). Restore it from a backup with "
                           "`slatectl registry restore BACKUP --force` (the damaged file is kept aside).") from exc
        if isinstance(exc, OperationalError):
            raise BadInput(f"the registry database {url} cannot be used ({reason}); nothing was changed. Check "
                           "--registry-url / SLATECTL_REGISTRY_URL and --home, and that the database server is "
                           "running.") from exc
        raise JobFailed(f"the registry database {url} refused the operation ({type(exc).__name__}: {reason}); "
                        "the transaction was rolled back. Run the command again; if it persists, run "
                        "`slatectl registry verify`.") from exc
