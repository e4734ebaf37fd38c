"""Registry library: runs, checkpoints, artifacts, promotions, datasets, verify, errors.
Every test runs against SQLite and against a real PostgreSQL server (`registry_settings`)."""

from __future__ import annotations

import os
import sqlite3

import pytest
import torch
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from slatectl.registry import Promotion, SCHEMA_VERSION, config_hash, open_registry
from slatectl.registry.models import SchemaVersion
from slatectl.errors import BadInput, JobFailed
from slatectl.settings import Settings
from slatectl.storage import CorruptFile, MissingFile


def tiny_state(value: float = 0.0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2,), float(value))}


def add_checkpoints(reg, run_id: int, returns: dict[int, float]):
    return [reg.register_checkpoint(run_id, step, tiny_state(step), val_return_mean=value, val_return_std=0.5,
                                    val_episodes=10) for step, value in returns.items()]


def flags(reg, run_id):
    return {c.step: (c.is_best, c.is_last) for c in reg.list_checkpoints(run_id=run_id)}


# -- runs ------------------------------------------------------------------------------------------

def test_run_records_config_and_lifecycle(reg):
    config = {"lr": 3e-4, "hidden": [256, 256], "gems": {"latent_dim": 32}}
    run = reg.start_run("sac-gems", "diffuse_topdown", 7, config, command="slatectl train sac-gems")
    stored = reg.get_run(run.id)
    assert stored.config == config and stored.config_hash == config_hash(config) == config_hash(dict(reversed(config.items())))
    assert (stored.status, stored.command, stored.finished_at) == ("running", "slatectl train sac-gems", None)
    assert stored.code_version.startswith("slatectl ")
    finished = reg.finish_run(run.id, "failed", error="NaN loss")
    assert (finished.status, finished.error) == ("failed", "NaN loss") and finished.finished_at is not None
    with pytest.raises(BadInput):
        reg.finish_run(run.id, "running")
    with pytest.raises(BadInput, match="no run 999"):
        reg.get_run(999)
    with pytest.raises(BadInput, match="no artifact"):
        reg.start_run("sac-gems", "diffuse_topdown", 1, {}, inputs=[42])


def test_validations_make_a_curve_and_are_unique_per_step(reg):
    run = reg.start_run("slateq", "focused_mix", 0, {})
    for step in (3000, 1000, 2000):
        reg.record_validation(run.id, step, step / 100, 1.0, 20)
    assert [v.step for v in reg.validations(run.id)] == [1000, 2000, 3000]
    with pytest.raises(BadInput, match="already has a validation"):
        reg.record_validation(run.id, 2000, 0.0, 0.0, 1)


# -- checkpoints ---------------------------------------------------------------------------------------

def test_best_and_last_flags_follow_the_run(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    other = reg.start_run("sac-gems", "focused_topdown", 2, {})
    add_checkpoints(reg, other.id, {10: 99.0})  # another run's best must not interfere
    add_checkpoints(reg, run.id, {10: 5.0})
    assert flags(reg, run.id) == {10: (True, True)}
    add_checkpoints(reg, run.id, {20: 9.0, 30: 7.0})
    assert flags(reg, run.id) == {10: (False, False), 20: (True, False), 30: (False, True)}
    add_checkpoints(reg, run.id, {15: 9.0})  # a tie goes to the earlier step; a lower step is not `last`
    assert flags(reg, run.id) == {10: (False, False), 15: (True, False), 20: (False, False), 30: (False, True)}
    add_checkpoints(reg, run.id, {40: 9.0})  # a later tie does not take `best`
    assert flags(reg, run.id) == {10: (False, False), 15: (True, False), 20: (False, False), 30: (False, False),
                                  40: (False, True)}
    assert flags(reg, other.id) == {10: (True, True)}
    checkpoint = reg.list_checkpoints(run_id=run.id)[0]
    assert (checkpoint.env, checkpoint.agent) == ("focused_topdown", "sac-gems")


def test_checkpoint_round_trip_and_test_return(reg):
    run = reg.start_run("sac-topk-ideal", "diffuse_mix", 3, {})
    state = {"actor.weight": torch.randn(5, 4), "critic.bias": torch.randn(5)}
    checkpoint = reg.register_checkpoint(run.id, 50_000, state, val_return_mean=12.5, val_return_std=2.0,
                                         val_episodes=100, episodes=500, env_steps=50_000)
    loaded = reg.load_checkpoint_state(checkpoint.id)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert reg.checkpoint_path(checkpoint.id).stat().st_size == checkpoint.size
    updated = reg.record_test_return(checkpoint.id, 11.0, 1.5, 500)
    again = reg.get_checkpoint(checkpoint.id)
    assert (again.test_return_mean, again.test_return_std, again.test_episodes) == (11.0, 1.5, 500) == (
        updated.test_return_mean, updated.test_return_std, updated.test_episodes)


def test_refused_checkpoints_leave_no_row_and_no_file(reg):
    run = reg.start_run("sac-gems", "focused_divpen", 1, {})
    add_checkpoints(reg, run.id, {100: 1.0})
    files_before = sorted(reg.store.iter_keys())
    with pytest.raises(BadInput, match="already has checkpoint"):
        add_checkpoints(reg, run.id, {100: 2.0})
    with pytest.raises(BadInput, match="no run"):
        add_checkpoints(reg, 12345, {1: 1.0})
    with pytest.raises(BadInput, match="finite"):
        add_checkpoints(reg, run.id, {200: float("nan")})
    assert len(reg.list_checkpoints()) == 1
    assert sorted(reg.store.iter_keys()) == files_before


def test_failed_insert_removes_the_stored_file(reg, monkeypatch):
    """A refusal inside the insert transaction rolls back the row and removes the file it wrote."""
    run = reg.start_run("sac-gems", "focused_divpen", 1, {})

    def refuse(*_args, **_kwargs):
        raise JobFailed("refused inside the transaction")

    monkeypatch.setattr(type(reg.checkpoints), "insert_row", refuse)
    with pytest.raises(JobFailed):
        add_checkpoints(reg, run.id, {1: 1.0})
    assert reg.list_checkpoints() == [] and list(reg.store.iter_keys()) == []


def test_corrupted_or_missing_checkpoint_is_refused_and_registry_unchanged(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    good, bad, gone = add_checkpoints(reg, run.id, {1: 1.0, 2: 2.0, 3: 3.0})
    path = reg.store.path_for(bad.storage_key)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    reg.store.path_for(gone.storage_key).unlink()
    before = [c.model_dump() for c in reg.list_checkpoints()]
    with pytest.raises(CorruptFile, match=f"checkpoint {bad.id}"):
        reg.load_checkpoint_state(bad.id)
    with pytest.raises(MissingFile, match=f"checkpoint {gone.id}"):
        reg.load_checkpoint_state(gone.id)
    assert reg.load_checkpoint_state(good.id)["w"].tolist() == [1.0, 1.0]
    report = reg.verify()
    assert not report.ok and report.checked == 3
    assert {(p.kind, p.row_id, p.problem.split()[0]) for p in report.problems} == {
        ("checkpoint", bad.id, "SHA-256"), ("checkpoint", gone.id, "missing")}
    reg.verify(fix=True)
    assert [c.model_dump() for c in reg.list_checkpoints()] == before  # verify never touches rows


# -- artifacts ------------------------------------------------------------------------------------------

def test_artifacts_with_lineage_and_lookup(reg, tmp_path):
    logged = reg.register_artifact("logged-data", "focused_topdown", b"slates", config={"episodes": 100, "seed": 1},
                                   metrics={"clicks": 3.2}, suffix=".npz")
    source = tmp_path / "gems.bin"
    source.write_bytes(b"weights" * 10)
    gems_v1 = reg.register_artifact("gems", "focused_topdown", source, config={"latent_dim": 32}, parents=[logged.id])
    gems_v2 = reg.register_artifact("gems", "focused_topdown", {"decoder": torch.ones(3)}, config={"latent_dim": 32},
                                    parents=[logged.id])
    assert gems_v2.parents == [logged.id] and gems_v2.storage_key.endswith(".pt")
    assert reg.find_artifact("gems", "focused_topdown", config={"latent_dim": 32}).id == gems_v2.id
    assert reg.find_artifact("gems", "focused_topdown", config_hash=config_hash({"latent_dim": 16})) is None
    assert reg.find_artifact("gems", "diffuse_topdown") is None
    assert reg.artifact_path(gems_v1.id).read_bytes() == source.read_bytes()
    assert reg.read_artifact_bytes(logged.id) == b"slates"
    assert torch.equal(reg.load_artifact_state(gems_v2.id)["decoder"], torch.ones(3))
    with pytest.raises(BadInput, match="no artifact 999"):
        reg.register_artifact("mf", "focused_topdown", b"x", parents=[999])
    assert [a.id for a in reg.list_artifacts(kind="gems")] == [gems_v1.id, gems_v2.id]


def test_policy_returns_are_registered_and_the_newest_wins(reg):
    assert reg.policy_return("focused_mix", "random") is None
    reg.record_policy_return("focused_mix", "random", 10.0, std=2.0, episodes=500, seed=0)
    reg.record_policy_return("focused_mix", "oracle", 40.0)
    reg.record_policy_return("focused_mix", "random", 11.0)
    value, artifact = reg.policy_return("focused_mix", "random")
    assert value == 11.0 and artifact.kind == "rollout"
    assert reg.policy_return("diffuse_mix", "random") is None


# -- promotions --------------------------------------------------------------------------------------------

def test_promotion_supersedes_and_keeps_history(reg):
    run = reg.start_run("sac-gems", "diffuse_topdown", 1, {})
    a, b, c = add_checkpoints(reg, run.id, {50_000: 10.0, 100_000: 20.0, 150_000: 15.0})
    first = reg.promote_checkpoint("diffuse_topdown", "medium", a.id, note="50k of 100k", promoted_by="alice")
    expert = reg.promote_checkpoint(None, "expert", b.id)
    second = reg.promote_checkpoint("diffuse_topdown", "medium", c.id)
    history = reg.promotion_history(env="diffuse_topdown", quality="medium")
    assert [p.id for p in history] == [first.id, second.id]
    old, new = history
    assert (old.active, old.superseded_by, old.note, old.promoted_by, old.checkpoint_id) == (
        False, second.id, "50k of 100k", "alice", a.id)
    assert (new.active, new.superseded_by) == (True, None)
    assert reg.active_promotion("diffuse_topdown", "medium").id == second.id
    assert reg.active_promotion("diffuse_topdown", "expert").id == expert.id
    promotion, checkpoint = reg.promoted_checkpoint("diffuse_topdown", "medium")
    assert (promotion.id, checkpoint.id) == (second.id, c.id)
    assert len(reg.promotion_history()) == 3
    assert [ck.id for ck in reg.list_checkpoints(quality="medium")] == [c.id]


def test_bad_promotions_are_refused_and_change_nothing(reg):
    run = reg.start_run("sac-gems", "diffuse_topdown", 1, {})
    (checkpoint,) = add_checkpoints(reg, run.id, {1: 1.0})
    reg.promote_checkpoint(None, "expert", checkpoint.id)
    before = [p.model_dump() for p in reg.promotion_history()]
    with pytest.raises(BadInput, match="trained on diffuse_topdown, not focused_mix"):
        reg.promote_checkpoint("focused_mix", "expert", checkpoint.id)
    with pytest.raises(BadInput, match="needs no checkpoint"):
        reg.promote_checkpoint(None, "random", checkpoint.id)
    with pytest.raises(BadInput, match="unknown quality"):
        reg.promote_checkpoint(None, "great", checkpoint.id)
    with pytest.raises(BadInput, match="no checkpoint 77"):
        reg.promote_checkpoint(None, "medium", 77)
    with pytest.raises(BadInput, match="no checkpoint is promoted as medium"):
        reg.promoted_checkpoint("diffuse_topdown", "medium")
    assert [p.model_dump() for p in reg.promotion_history()] == before


def test_database_itself_refuses_two_active_promotions(reg):
    run = reg.start_run("sac-gems", "diffuse_mix", 1, {})
    a, b = add_checkpoints(reg, run.id, {1: 1.0, 2: 2.0})
    reg.promote_checkpoint(None, "expert", a.id)
    with pytest.raises(IntegrityError):
        with Session(reg.engine) as session:
            session.add(Promotion(env="diffuse_mix", quality="expert", checkpoint_id=b.id, promoted_by="x"))
            session.commit()
    assert len(reg.promotion_history()) == 1


# -- datasets ------------------------------------------------------------------------------------------------

def test_datasets_and_their_lineage(reg, tmp_path):
    logged = reg.register_artifact("logged-data", "focused_topdown", b"slates")
    gems = reg.register_artifact("gems", "focused_topdown", b"vae", parents=[logged.id])
    run = reg.start_run("sac-gems", "focused_topdown", 1, {"steps": 100_000}, inputs=[gems.id])
    (checkpoint,) = add_checkpoints(reg, run.id, {50_000: 20.0})
    promotion = reg.promote_checkpoint(None, "medium", checkpoint.id)
    file = tmp_path / "medium.npz"
    file.write_bytes(b"episodes" * 50)
    dataset = reg.register_dataset("focused_topdown", "medium", file, episodes=10, transitions=1000, return_mean=20.0,
                                   return_std=3.0, format="npz", seed=5, checkpoint_id=checkpoint.id,
                                   promotion_id=promotion.id, metadata={"slate_size": 10})
    assert dataset.policy == "sac-gems" and dataset.meta == {"slate_size": 10}
    assert reg.dataset_path(dataset.id).read_bytes() == file.read_bytes()
    lineage = reg.dataset_lineage(dataset.id)
    assert [(n.kind, n.id) for n in lineage] == [("dataset", dataset.id), ("promotion", promotion.id),
                                                 ("checkpoint", checkpoint.id), ("run", run.id),
                                                 ("artifact", gems.id), ("artifact", logged.id)]
    random = reg.register_dataset("focused_topdown", "random", b"random-episodes", episodes=10, transitions=1000,
                                  return_mean=5.0, return_std=1.0, format="npz", seed=5)
    assert random.policy == "random" and [n.kind for n in reg.dataset_lineage(random.id)] == ["dataset"]
    assert [d.id for d in reg.list_datasets(env="focused_topdown")] == [dataset.id, random.id]


def test_inconsistent_datasets_are_refused_without_leaving_files(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    (checkpoint,) = add_checkpoints(reg, run.id, {1: 1.0})
    files = sorted(reg.store.iter_keys())
    common = dict(episodes=1, transitions=100, return_mean=1.0, return_std=0.0, format="npz", seed=0)
    with pytest.raises(BadInput, match="trained on focused_topdown, not diffuse_mix"):
        reg.register_dataset("diffuse_mix", "expert", b"x", checkpoint_id=checkpoint.id, **common)
    with pytest.raises(BadInput, match="random dataset has no checkpoint"):
        reg.register_dataset("focused_topdown", "random", b"x", checkpoint_id=checkpoint.id, **common)
    with pytest.raises(BadInput, match="format"):
        reg.register_dataset("focused_topdown", "random", b"x", **{**common, "format": "csv"})
    with pytest.raises(BadInput, match="no dataset 5"):
        reg.get_dataset(5)
    assert reg.list_datasets() == [] and sorted(reg.store.iter_keys()) == files


# -- verify ----------------------------------------------------------------------------------------------

def test_verify_reports_orphans_and_fix_removes_only_them(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    (checkpoint,) = add_checkpoints(reg, run.id, {1: 1.0})
    artifact = reg.register_artifact("mf", "focused_topdown", b"embeddings")
    orphan = reg.store.put_bytes("checkpoint", b"nobody's")
    fresh_temp = reg.store.root / "gems" / ".tmp-inflight.pt"
    stale_temp = reg.store.root / "gems" / ".tmp-crashed.pt"
    fresh_temp.parent.mkdir(parents=True, exist_ok=True)
    fresh_temp.write_bytes(b"half")
    stale_temp.write_bytes(b"half")
    os.utime(stale_temp, (0, 0))  # a temp file untouched for decades is not a write in progress
    report = reg.verify()
    assert report.ok and report.checked == 2
    assert set(report.orphans) == {orphan.key, "gems/.tmp-crashed.pt"}
    assert report.in_progress == ["gems/.tmp-inflight.pt"] and report.removed == []
    fixed = reg.verify(fix=True)
    assert set(fixed.removed) == {orphan.key, "gems/.tmp-crashed.pt"}
    assert set(reg.store.iter_keys()) == {checkpoint.storage_key, artifact.storage_key, "gems/.tmp-inflight.pt"}
    assert reg.verify().orphans == []
    assert reg.load_checkpoint_state(checkpoint.id)["w"].tolist() == [1.0, 1.0]


def test_fix_rechecks_under_the_write_lock(reg, monkeypatch):
    """A file whose row is committed between the scan and the fix is not removed."""
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    checkpoint, _other = add_checkpoints(reg, run.id, {1: 1.0, 2: 2.0})
    real = type(reg.verifier)._recorded_files
    calls = []

    def row_not_yet_committed_at_scan(self, session=None):
        calls.append(session)
        recorded = real(self, session)
        return recorded if session is not None else {k: v for k, v in recorded.items() if k != checkpoint.storage_key}

    monkeypatch.setattr(type(reg.verifier), "_recorded_files", row_not_yet_committed_at_scan)
    report = reg.verify(fix=True)
    assert report.orphans == [checkpoint.storage_key] and report.removed == []
    assert len(calls) == 2 and reg.store.exists(checkpoint.storage_key, checkpoint.size)


# -- schema and database errors --------------------------------------------------------------------------

def test_schema_version_is_recorded_and_newer_schemas_refused(reg, registry_settings):
    with Session(reg.engine) as session:
        assert session.exec(select(SchemaVersion.version)).all() == [SCHEMA_VERSION]
        session.add(SchemaVersion(version=SCHEMA_VERSION + 1))
        session.commit()
    with pytest.raises(BadInput, match="upgrade slatectl"):
        open_registry(registry_settings)


def test_reopening_keeps_everything(reg, registry_settings):
    run = reg.start_run("slateq", "diffuse_divpen", 4, {"gamma": 0.8})
    add_checkpoints(reg, run.id, {10: 1.0, 20: 2.0})
    with open_registry(registry_settings) as again:
        assert [c.step for c in again.list_checkpoints()] == [10, 20]
        assert again.get_run(run.id).config == {"gamma": 0.8}


def test_unreachable_database_is_bad_input(tmp_path):
    url = f"postgresql+psycopg://nobody@/nodb?host={tmp_path}/no-server&port=1"
    with pytest.raises(BadInput, match="cannot be used"):
        open_registry(Settings(home=tmp_path, registry_url=url))
    with pytest.raises(BadInput, match="not a database URL"):
        open_registry(Settings(home=tmp_path, registry_url="not a url"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BadInput, match="cannot create the registry folder"):
        open_registry(Settings(home=blocker, registry_url=f"sqlite:///{blocker}/registry.db"))


def test_locked_sqlite_database_is_bad_input_and_changes_nothing(sqlite_settings):
    with open_registry(sqlite_settings, busy_timeout_s=0.1) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, {})
        holder = sqlite3.connect(sqlite_settings.home / "registry.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(BadInput, match="locked"):
                add_checkpoints(reg, run.id, {1: 1.0})
            with pytest.raises(BadInput, match="locked"):
                reg.start_run("sac-gems", "focused_topdown", 2, {})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert reg.list_checkpoints() == [] and len(reg.list_runs()) == 1
        assert list(reg.store.iter_keys()) == []  # the file written before the lock wait was removed
        add_checkpoints(reg, run.id, {1: 1.0})  # and the registry works once the lock is gone
        assert [c.step for c in reg.list_checkpoints()] == [1]


def test_sqlite_registry_uses_wal(sqlite_settings):
    with open_registry(sqlite_settings):
        pass
    with sqlite3.connect(sqlite_settings.home / "registry.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

