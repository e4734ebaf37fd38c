"""A registry file that is not a valid registry is refused (exit 2, file named, remedy given) and never
re-created or changed; a registry is created only where no file exists, complete, even by several
processes at once; every database error reaches the user as one clear message."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.errors import BadInput, JobFailed
from slatectl.registry import SCHEMA_VERSION, open_registry
from slatectl.settings import Settings

runner = CliRunner()
SPAWN = multiprocessing.get_context("spawn")


def populated_registry(settings: Settings) -> bytes:
    with open_registry(settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, {})
        for step in range(1, 40):
            reg.register_checkpoint(run.id, step, {"w": torch.zeros(4)}, val_return_mean=float(step),
                                    val_return_std=0.0, val_episodes=1)
    return (settings.home / "registry.db").read_bytes()


def damage(kind: str, db: Path, good: bytes) -> None:
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "garbage":
        db.write_bytes(bytes(range(256)) * 64)
    elif kind == "bad header":
        db.write_bytes(b"Not SQLite at all" + good[17:])
    elif kind == "truncated":
        db.write_bytes(good[: len(good) // 2])
    elif kind == "wrong schema":
        db.unlink()
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        other.close()
    elif kind == "no tables":
        db.unlink()
        sqlite3.connect(db).execute("PRAGMA user_version = 7").connection.close()
    elif kind == "corrupt pages":
        data = bytearray(good)
        page = 4096
        for offset in range(2 * page, len(data) - page, page):  # keep page 1 (header, schema) intact
            data[offset:offset + 200] = b"\xff" * 200
        db.write_bytes(bytes(data))
    else:
        raise AssertionError(kind)


KINDS = ["empty", "garbage", "bad header", "truncated", "wrong schema", "no tables", "corrupt pages"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_registry_file_is_refused_by_every_command_and_left_as_it_is(sqlite_settings, kind):
    good = populated_registry(sqlite_settings)
    db = sqlite_settings.home / "registry.db"
    for side in ("registry.db-wal", "registry.db-shm"):
        (sqlite_settings.home / side).unlink(missing_ok=True)
    damage(kind, db, good)
    before = db.read_bytes()
    with pytest.raises(BadInput, match="not a valid slatectl registry") as refused:
        open_registry(sqlite_settings)
    assert str(db) in str(refused.value) and "restore" in str(refused.value)
    cli = ["--home", str(sqlite_settings.home)]
    for command in (["ckpt", "list"], ["inspect"], ["registry", "verify"], ["registry", "verify", "--fix", "--yes"],
                    ["registry", "gc", "--yes"], ["ckpt", "history", "--json"]):
        result = runner.invoke(app, [*cli, *command])
        assert result.exit_code == 2, (command, result.output)
        assert "not a valid slatectl registry" in result.stderr and str(db) in " ".join(result.stderr.split())
        assert "Traceback" not in result.output
    assert db.read_bytes() == before  # nothing re-created, nothing "repaired"
    artifacts = sqlite_settings.home / "artifacts" / "checkpoint"
    assert len(list(artifacts.iterdir())) == 39  # and no file was moved or deleted


def test_a_folder_in_place_of_the_file_is_refused(sqlite_settings):
    (sqlite_settings.home / "registry.db").mkdir(parents=True)
    with pytest.raises(BadInput, match="folder"):
        open_registry(sqlite_settings)


def test_a_new_registry_is_created_only_where_no_file_exists(sqlite_settings):
    db = sqlite_settings.home / "registry.db"
    assert not db.exists()
    with open_registry(sqlite_settings) as reg:
        assert reg.schema_version == SCHEMA_VERSION and reg.list_runs() == []
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    assert [p.name for p in sqlite_settings.home.iterdir() if p.name.startswith(".")] == []  # no temp left


def _open_and_start(home: str, barrier, index: int) -> None:
    barrier.wait(timeout=60)
    with open_registry(home=home) as reg:
        reg.start_run("slateq", "focused_mix", index, {})


def test_processes_creating_one_registry_at_once_all_use_the_same_file(tmp_path):
    home = tmp_path / "fresh"
    barrier = SPAWN.Barrier(4)
    workers = [SPAWN.Process(target=_open_and_start, args=(str(home), barrier, i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with open_registry(home=home) as reg:
        assert sorted(r.seed for r in reg.list_runs()) == [0, 1, 2, 3]


def test_database_errors_of_every_kind_are_one_clear_message(sqlite_settings, monkeypatch):
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

    from slatectl.registry.db import database_errors

    cases = [
        (DatabaseError("SELECT", {}, Exception("database disk image is malformed")), BadInput, "damaged"),
        (OperationalError("INSERT", {}, Exception("database or disk is full")), JobFailed, "Free disk space"),
        (OperationalError("INSERT", {}, Exception("disk I/O error")), JobFailed, "nothing was registered"),
        (IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), JobFailed, "rolled back"),
        (OperationalError("BEGIN", {}, Exception("database is locked")), BadInput, "locked"),
    ]
    for error, expected, words in cases:
        with pytest.raises(expected, match=words) as raised:
            with database_errors("sqlite:///x.db", 1.0):
                raise error
        assert "sqlite:///x.db" in str(raised.value)


def test_a_database_error_inside_a_command_is_one_line_not_a_traceback(sqlite_settings, monkeypatch):
    from sqlalchemy.exc import DatabaseError

    from slatectl.registry.checkpoints import CheckpointRepository

    populated_registry(sqlite_settings)

    def broken(*_args, **_kwargs):
        raise DatabaseError("SELECT", {}, Exception("database disk image is malformed"))

    monkeypatch.setattr(CheckpointRepository, "list_checkpoints", lambda self, *a, **k: _in_session(self, broken))
    result = runner.invoke(app, ["--home", str(sqlite_settings.home), "ckpt", "list"])
    assert result.exit_code == 2 and "is damaged" in result.stderr and "Traceback" not in result.output


def _in_session(repository, action):
    with repository.db.read():
        action()


def test_a_missing_file_beside_its_write_ahead_log_is_not_re_created(sqlite_settings):
    sqlite_settings.home.mkdir(parents=True)
    wal = sqlite_settings.home / "registry.db-wal"
    wal.write_bytes(b"\x37\x7f\x06\x82" + bytes(60))  # a WAL header: commits that belong to a lost file
    with pytest.raises(BadInput, match="write-ahead log"):
        open_registry(sqlite_settings)
    assert not (sqlite_settings.home / "registry.db").exists() and wal.exists()
