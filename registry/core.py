"""The registry handle: an engine, the artifact store, and short read / write transactions."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine
from sqlmodel import Session

from slatectl.registry.db import database_errors, display_url, ensure_schema, make_engine, parse_url, writer
from slatectl.storage import ArtifactStore


class RegistryCore:
    def __init__(self, url: str, store: ArtifactStore, busy_timeout_s: float = 30.0) -> None:
        self.url = display_url(parse_url(url))
        self.busy_timeout_s = busy_timeout_s
        self.store = store
        self.engine: Engine = make_engine(url, busy_timeout_s)
        self._writer = writer(self.engine)
        try:
            with self._errors():
                self.schema_version = ensure_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    def _errors(self):
        return database_errors(self.url, self.busy_timeout_s)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; objects stay usable after it closes."""
        with self._errors(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._errors(), Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
