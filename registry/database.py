"""`Database`: the unit every repository shares — the engine, the artifact store, short read / write
transactions, and the one rule for rows that describe stored files (file first, row second)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from slatectl.errors import JobFailed
from slatectl.registry.db import database_errors, display_url, open_engine, parse_url, serialize_on, sqlite_file, writer
from slatectl.storage import ArtifactStore, StoredFile

Row = TypeVar("Row")

# Writers of file rows hold it shared, `verify --fix` / pruning exclusively (PostgreSQL advisory lock;
# SQLite's BEGIN IMMEDIATE serialises every writer anyway).
STORE_LOCK = "store"


class Database:
    """Open with a URL and a store; `home` is the folder holding trash/ and scratch/ (default: the
    store's parent, which is the CLI's --home)."""

    def __init__(self, url: str, store: ArtifactStore, busy_timeout_s: float = 30.0,
                 home: Path | str | None = None) -> None:
        parsed = parse_url(url)
        self.url = display_url(parsed)
        self.file = sqlite_file(parsed)  # the SQLite file, None for a server database
        self.busy_timeout_s = busy_timeout_s
        self.store = store
        self.home = Path(home) if home is not None else Path(store.root).parent
        self.engine: Engine
        self.engine, self.schema_version = open_engine(url, busy_timeout_s)
        self._writer = writer(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def errors(self):
        """Translate driver errors raised inside the block (see `db.database_errors`)."""
        return database_errors(self.url, self.busy_timeout_s)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; objects stay usable after it closes."""
        with self.errors(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self.errors(), Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def insert_with_file(self, stored: StoredFile, insert: Callable[[Session], Row]) -> Row:
        """Insert the row for a freshly stored file; if that fails before COMMIT, remove the file again.

        A failure during COMMIT is ambiguous (the connection may drop after the server committed), so the
        file stays: an orphan file is harmless and reported by `verify`; a row without its file is not.
        """
        reached_commit = False
        try:
            with self.write() as session:
                serialize_on(session, STORE_LOCK, shared=True)
                # `registry verify --fix` may have judged the file an orphan before this row existed.
                if not self.store.exists(stored.key, stored.size):
                    raise JobFailed(f"the stored file {stored.key} disappeared before it was registered "
                                    "(was `registry verify --fix` running?); run the step again.")
                row = insert(session)
                reached_commit = True
            return row
        except BaseException:
            if not reached_commit:
                self.store.remove(stored.key)
            raise

    def close(self) -> None:
        self.engine.dispose()
