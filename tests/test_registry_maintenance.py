"""Backup and restore, `registry gc` (superseded resume states, scratch leftovers), resume-state
pruning, the trash, and `verify --fix`'s refusals — through the library and the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from slatectl.cli import app, registry_cmd
from slatectl.errors import BadInput
from slatectl.registry import backup_registry, open_registry, restore_registry

runner = CliRunner()


def invoke(settings, *args, **kwargs):
    return runner.invoke(app, ["--home", str(settings.home), "--registry-url", settings.registry_url, *args], **kwargs)


def add_run_with_resume_states(reg, steps=(100, 200, 300), seed=1):
    run = reg.start_run("sac-gems", "focused_topdown", seed, {})
    states = [reg.register_artifact("resume-state", "focused_topdown", bytes([step % 256]) * (1000 + step),
                                    run_id=run.id, config={"run_id": run.id, "step": step}) for step in steps]
    for step in steps:
        reg.register_checkpoint(run.id, step, {"w": torch.full((2,), float(step))}, val_return_mean=float(step),
                                val_return_std=0.0, val_episodes=1)
    return run, states


# -- resume states ----------------------------------------------------------------------------------------

def test_prune_keeps_the_newest_resume_states_and_their_rows(reg):
    run, states = add_run_with_resume_states(reg, steps=(300, 100, 200))  # registered out of order
    newest = states[0]
    pruned = reg.prune_resume_states(run.id, keep=1)
    assert sorted(a.config["step"] for a in pruned) == [100, 200]
    assert [a.id for a in reg.resume_states(run.id)] == [newest.id]
    assert reg.read_artifact_bytes(newest.id) == bytes([300 % 256]) * 1300
    for artifact in pruned:
        assert not reg.store.exists(artifact.storage_key)
    history = reg.list_artifacts(kind="resume-state", include_pruned=True)
    assert len(history) == 3 and sum(a.pruned_at is not None for a in history) == 2  # rows stay as history
    report = reg.verify()
    assert report.ok and report.orphans == []  # pruned files are neither missing nor orphans
    assert reg.prune_resume_states(run.id, keep=1) == []  # idempotent
    with pytest.raises(BadInput, match="at least 1"):
        reg.prune_resume_states(run.id, keep=0)


def test_disk_usage_drops_when_resume_states_are_pruned(reg):
    run, states = add_run_with_resume_states(reg)
    before = reg.run_disk_usage(run.id)
    reg.prune_resume_states(run.id)
    assert reg.run_disk_usage(run.id) == before - states[0].size - states[1].size


# -- gc ---------------------------------------------------------------------------------------------------

def make_scratch_leftover(reg, name="tmpkilled", age_s=7 * 3600):
    leftover = reg.scratch_dir / name
    (leftover / "minari").mkdir(parents=True)
    (leftover / "dataset.npz").write_bytes(b"partial" * 100)
    for path in (leftover / "dataset.npz", leftover / "minari", leftover):
        os.utime(path, (0, os.path.getmtime(path) - age_s))
    return leftover


def test_gc_is_a_dry_run_until_yes(reg, registry_settings):
    run, states = add_run_with_resume_states(reg)
    other, other_states = add_run_with_resume_states(reg, steps=(10,), seed=2)
    old = make_scratch_leftover(reg)
    live = reg.scratch_dir / "tmplive"
    live.mkdir()
    (live / "dataset.npz").write_bytes(b"being written")
    files_before = sorted(reg.store.iter_keys())

    dry = invoke(registry_settings, "registry", "gc")
    assert dry.exit_code == 0, dry.output
    assert "Would remove resume state" in dry.stdout and "registry gc --yes" in dry.stdout
    assert sorted(reg.store.iter_keys()) == files_before and old.exists()

    done = invoke(registry_settings, "registry", "gc", "--yes", "--json")
    assert done.exit_code == 0, done.output
    import json
    report = json.loads(done.stdout)
    assert sorted(s["id"] for s in report["resume_states"]) == [states[0].id, states[1].id]
    assert report["reclaimed_bytes"] == states[0].size + states[1].size + 700
    assert not old.exists() and live.exists()  # a recent scratch folder may belong to a running collect
    assert [a.id for a in reg.resume_states(run.id)] == [states[2].id]
    assert [a.id for a in reg.resume_states(other.id)] == [other_states[0].id]
    assert len(reg.list_checkpoints()) == 4 and reg.verify().ok
    assert "Nothing to remove" in invoke(registry_settings, "registry", "gc", "--yes").stdout


def test_gc_removes_files_left_by_an_interrupted_prune(reg, registry_settings, monkeypatch):
    run, states = add_run_with_resume_states(reg)
    monkeypatch.setattr(type(reg.artifacts), "remove_pruned_files", lambda self, artifacts: None)  # "killed" here
    reg.prune_resume_states(run.id)
    assert reg.store.exists(states[0].storage_key)
    monkeypatch.undo()
    report = reg.gc(apply=True)
    assert [a.id for a in report.lingering] == [states[0].id, states[1].id]
    assert not reg.store.exists(states[0].storage_key) and not reg.store.exists(states[1].storage_key)


@pytest.mark.parametrize("args", [["--keep", "0"], ["--keep", "1001"], ["--scratch-older-than", "-1"],
                                  ["--scratch-older-than", "nan"]])
def test_gc_options_are_range_checked(sqlite_settings, args):
    result = invoke(sqlite_settings, "registry", "gc", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output


# -- verify --fix ------------------------------------------------------------------------------------------

def test_fix_moves_orphans_to_the_trash_with_a_log_and_cleans_scratch(reg, registry_settings):
    run, _ = add_run_with_resume_states(reg, steps=(1,))
    orphan = reg.store.put_bytes("dataset", b"a 58 MB dataset, in spirit")
    leftover = make_scratch_leftover(reg)
    refused = invoke(registry_settings, "registry", "verify", "--fix")  # no terminal, no --yes
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert reg.store.exists(orphan.key) and leftover.exists()

    registry_cmd_is_interactive = registry_cmd.is_interactive
    try:
        registry_cmd.is_interactive = lambda: True
        declined = invoke(registry_settings, "registry", "verify", "--fix", input="n\n")
        assert declined.exit_code == 0 and "Nothing moved" in declined.stdout and reg.store.exists(orphan.key)
        accepted = invoke(registry_settings, "registry", "verify", "--fix", input="y\n")
    finally:
        registry_cmd.is_interactive = registry_cmd_is_interactive
    assert accepted.exit_code == 0, accepted.output
    assert not reg.store.exists(orphan.key) and not leftover.exists()
    (folder,) = list(reg.trash_dir.iterdir())
    assert (folder / orphan.key).read_bytes() == b"a 58 MB dataset, in spirit"
    log = (folder / "log.tsv").read_text()
    assert orphan.key in log and "orphan" in log and str(len(b"a 58 MB dataset, in spirit")) in log


def test_fix_refuses_when_the_registry_records_no_files(sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        kept = [reg.store.put_bytes("dataset", b"precious"), reg.store.put_bytes("checkpoint", b"weights")]
        with pytest.raises(BadInput, match="records no files"):
            reg.verify(fix=True)
    result = invoke(sqlite_settings, "registry", "verify", "--fix", "--yes")
    assert result.exit_code == 2 and "records no files" in result.stderr
    with open_registry(sqlite_settings) as reg:
        assert all(reg.store.exists(f.key) for f in kept) and not reg.trash_dir.exists()


@pytest.mark.parametrize("name", [".DS_Store", "has space.pt"])
def test_verify_fix_reports_foreign_files_and_still_moves_the_orphans(sqlite_settings, name):
    with open_registry(sqlite_settings) as reg:
        add_run_with_resume_states(reg, steps=(1,))
        orphan = reg.store.put_bytes("checkpoint", b"nobody's", suffix=".pt")  # a valid name, no row
        foreign = reg.store.root / "checkpoint" / name
        foreign.write_bytes(b"put here by hand")
    result = invoke(sqlite_settings, "registry", "verify", "--fix", "--yes")
    assert result.exit_code == 0, result.output
    assert "foreign file" in result.stdout and name in result.stdout
    assert foreign.read_bytes() == b"put here by hand"  # left alone
    with open_registry(sqlite_settings) as reg:
        assert not reg.store.exists(orphan.key)
        assert any(p.name == orphan.key.split("/")[1] for p in reg.trash_dir.rglob("*.pt"))
        report = reg.verify()
    assert report.ok and report.orphans == [] and report.foreign == [f"checkpoint/{name}"]


# -- backup and restore -------------------------------------------------------------------------------------

def test_backup_and_restore_round_trip(sqlite_settings, tmp_path):
    with open_registry(sqlite_settings) as reg:
        run, _ = add_run_with_resume_states(reg, steps=(1, 2))
        writer = reg  # keep it open: the backup is taken while the registry is in use
        backup = tmp_path / "backups" / "reg.db"
        backup.parent.mkdir()
        result = invoke(sqlite_settings, "registry", "backup", str(backup))
        assert result.exit_code == 0, result.output
        assert "artifacts" in result.stdout
        writer.start_run("slateq", "diffuse_mix", 9, {})  # a change after the backup
    again = invoke(sqlite_settings, "registry", "backup", str(backup))
    assert again.exit_code == 2 and "never overwrites" in again.stderr
    with sqlite3.connect(backup) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert copy.execute("SELECT count(*) FROM runs").fetchone()[0] == 1

    refused = invoke(sqlite_settings, "registry", "restore", str(backup))
    assert refused.exit_code == 2 and "--force" in refused.stderr
    restored = invoke(sqlite_settings, "registry", "restore", str(backup), "--force")
    assert restored.exit_code == 0, restored.output
    aside = [p for p in sqlite_settings.home.iterdir() if p.name.startswith("registry.db.replaced-")]
    assert aside and any(not p.name.endswith(("-wal", "-shm")) for p in aside)
    with open_registry(sqlite_settings) as reg:
        assert [r.seed for r in reg.list_runs()] == [1] and reg.verify().ok
    main_aside = next(p for p in aside if not p.name.endswith(("-wal", "-shm")))
    with sqlite3.connect(main_aside) as old:
        assert old.execute("SELECT count(*) FROM runs").fetchone()[0] == 2  # the replaced registry is intact


def test_a_damaged_registry_is_replaced_by_restore(sqlite_settings, tmp_path):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("sac-gems", "focused_topdown", 1, {})
    backup_registry(sqlite_settings.registry_url, tmp_path / "good.db")
    db = sqlite_settings.home / "registry.db"
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    db.write_bytes(b"")  # the 0-byte registry
    assert invoke(sqlite_settings, "ckpt", "list").exit_code == 2
    result = restore_registry(sqlite_settings.registry_url, tmp_path / "good.db", force=True)
    assert result.kept_aside is not None and result.kept_aside.read_bytes() == b""
    with open_registry(sqlite_settings) as reg:
        assert len(reg.list_runs()) == 1


@pytest.mark.parametrize("content", [b"", b"garbage" * 100])
def test_restore_refuses_an_invalid_backup_and_changes_nothing(sqlite_settings, tmp_path, content):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("sac-gems", "focused_topdown", 1, {})
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    result = invoke(sqlite_settings, "registry", "restore", str(bad), "--force")
    assert result.exit_code == 2 and "not a valid slatectl registry" in result.stderr
    assert [p.name for p in sqlite_settings.home.iterdir() if "replaced" in p.name] == []
    with open_registry(sqlite_settings) as reg:
        assert len(reg.list_runs()) == 1


def test_restore_refuses_a_file_with_a_schema_version_table_but_no_registry_tables(sqlite_settings, tmp_path):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("sac-gems", "focused_topdown", 1, {})
    impostor = tmp_path / "impostor.db"
    with sqlite3.connect(impostor) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER, applied_at TEXT)")
        connection.execute("INSERT INTO schema_version VALUES (3, '2026-01-01')")
    connection.close()
    result = invoke(sqlite_settings, "registry", "restore", str(impostor), "--force")
    assert result.exit_code == 2 and "not a valid slatectl registry" in result.stderr, result.output
    assert "runs" in result.stderr and "checkpoints" in result.stderr  # names what is missing
    assert [p.name for p in sqlite_settings.home.iterdir() if "replaced" in p.name] == []
    with open_registry(sqlite_settings) as reg:
        assert len(reg.list_runs()) == 1


def test_restore_into_an_empty_home_needs_no_force(tmp_path, sqlite_settings):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("sac-gems", "focused_topdown", 1, {})
    backup_registry(sqlite_settings.registry_url, tmp_path / "b.db")
    fresh = tmp_path / "fresh-home"
    result = runner.invoke(app, ["--home", str(fresh), "registry", "restore", str(tmp_path / "b.db")])
    assert result.exit_code == 0, result.output
    with open_registry(home=fresh) as reg:
        assert len(reg.list_runs()) == 1


def test_postgresql_backup_prints_pg_dump_guidance(tmp_path):
    url = "postgresql+psycopg://someone@localhost/slatectl"
    for command in (["registry", "backup", str(tmp_path / "x")], ["registry", "restore", str(tmp_path / "x")]):
        result = runner.invoke(app, ["--registry-url", url, *command])
        assert result.exit_code == 2 and "pg_dump" in result.stderr and "Traceback" not in result.output


@pytest.fixture
def immutable_folder(tmp_path):
    """A folder nobody may create files in, root included (`chattr +i`; chmod does not stop root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    try:
        locked = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    except OSError:
        locked = False
    if not locked:
        pytest.skip("needs chattr +i (root on a filesystem with immutable files)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_backup_into_a_read_only_folder_is_one_write_failure_message(sqlite_settings, immutable_folder):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("sac-gems", "focused_topdown", 1, {})
    result = invoke(sqlite_settings, "registry", "backup", str(immutable_folder / "b.db"))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: could not write {immutable_folder / 'b.db'} (Operation not permitted)")
    assert "unexpected" not in result.stderr and list(immutable_folder.iterdir()) == []


def test_restore_into_a_read_only_home_is_one_write_failure_message(sqlite_settings, tmp_path, immutable_folder):
    with open_registry(sqlite_settings) as reg:
        reg.start_run("sac-gems", "focused_topdown", 1, {})
    backup_registry(sqlite_settings.registry_url, tmp_path / "b.db")
    result = runner.invoke(app, ["--home", str(immutable_folder), "registry", "restore", str(tmp_path / "b.db")])
    assert result.exit_code == 1, result.output
    assert "error: could not write" in result.stderr and "the registry was not changed" in result.stderr
    assert "unexpected" not in result.stderr and list(immutable_folder.iterdir()) == []
