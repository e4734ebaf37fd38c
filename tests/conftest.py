"""Shared fixtures. `registry_settings` runs a test against SQLite and against a throwaway PostgreSQL
server (marked `postgres`; skipped with the reason when no server can be started here)."""

from __future__ import annotations

import sys

import pytest

from slatectl.settings import Settings


def _sqlite_settings(home) -> Settings:
    return Settings(home=home, registry_url=f"sqlite:///{(home / 'registry.db').as_posix()}")


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:
    """A registry in a temp home with the default SQLite URL (independent of SLATECTL_* variables)."""
    return _sqlite_settings(tmp_path / "home")


@pytest.fixture(scope="session")
def postgres_server():
    from postgres_server import PostgresUnavailable, throwaway_postgres

    server = throwaway_postgres()
    try:
        running = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    yield running
    server.__exit__(None, None, None)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_settings(request, tmp_path) -> Settings:
    home = tmp_path / "home"
    if request.param == "sqlite":
        return _sqlite_settings(home)
    return Settings(home=home, registry_url=request.getfixturevalue("postgres_server").create_database())


@pytest.fixture
def reg(registry_settings):
    from slatectl.registry import open_registry

    with open_registry(registry_settings) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Restore torch's thread count after each test: in-process CLI commands set it for the whole process
    (the default is every core), and later tests must not inherit what an earlier one chose."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """Run the test at one torch thread (restored afterwards by `_keep_torch_threads`): for tests whose
    expected values were measured there and whose kernels round differently with more threads."""
    import torch

    torch.set_num_threads(1)

