"""Engine, connection settings, schema creation and migrations, and database-error translation.

SQLite is the default and is used by several processes at once (parallel training runs), so:
WAL (readers never block the writer), a long busy timeout, and every write transaction opened with
`BEGIN IMMEDIATE` so writers queue for the lock up front instead of failing on a read-to-write upgrade.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from slatectl.registry.models import TABLES, SchemaVersion, utcnow
from slatectl.errors import BadInput

SCHEMA_VERSION = 1
# MIGRATIONS[v] upgrades a database at version v-1 to v, inside the schema transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}

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


def make_engine(url: str, busy_timeout_s: float = 30.0) -> Engine:
    parsed = parse_url(url)
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadInput(f"cannot create the registry folder {folder} ({exc}); choose another --home "
                               "or --registry-url.") from exc
        else:  # one shared connection, or each connection would see its own empty in-memory database
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
        _configure_sqlite(engine, busy_timeout_s)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below instead of pysqlite's own BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # Switching to WAL takes an exclusive lock; skip it when the file is already in WAL (it persists).
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
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


# -- errors -------------------------------------------------------------------------------------------

@contextmanager
def database_errors(url: str, busy_timeout_s: float) -> Iterator[None]:
    """Turn driver errors about reaching or locking the database into one clear BadInput."""
    try:
        yield
    except OperationalError as exc:
        text_of_error = str(getattr(exc, "orig", None) or exc).strip()
        reason = text_of_error.splitlines()[0] if text_of_error else type(exc).__name__
        if "locked" in reason.lower() or "busy" in reason.lower():
            message = (f"the registry database {url} stayed locked by another process for {busy_timeout_s:g} s "
                       f"({reason}); nothing was changed. Try again when the other slatectl command has finished.")
        else:
            message = (f"the registry database {url} cannot be used ({reason}); nothing was changed. Check "
                       "--registry-url / SLATECTL_REGISTRY_URL and --home, and that the database server is running.")
        raise BadInput(message) from exc
