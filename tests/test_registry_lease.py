"""Run leases (pid, host, heartbeat), run statuses, and the schema migration that added them."""

from __future__ import annotations

import multiprocessing
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import text
from sqlmodel import Session

from slatectl.errors import BadInput, JobFailed
from slatectl.registry import SCHEMA_VERSION, STALE, open_registry, run_liveness
from slatectl.registry.models import Run, utcnow
from slatectl.settings import Settings

SPAWN = multiprocessing.get_context("spawn")


def age_heartbeat(reg, run_id: int, seconds: float) -> None:
    with Session(reg.engine) as session:
        run = session.get(Run, run_id)
        run.heartbeat_at = utcnow() - timedelta(seconds=seconds)
        session.add(run)
        session.commit()


def take_over(reg, run_id: int, pid: int, host: str = "elsewhere") -> None:
    """Pretend another process holds the lease."""
    with Session(reg.engine) as session:
        run = session.get(Run, run_id)
        run.pid, run.host, run.heartbeat_at = pid, host, utcnow()
        session.add(run)
        session.commit()


def test_start_run_holds_the_lease_for_this_process(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    assert (run.pid, run.host, run.status) == (os.getpid(), socket.gethostname(), "running")
    assert run.heartbeat_at is not None and reg.run_liveness(run) == "running"
    reg.heartbeat(run.id)
    reg.claim_run(run.id)  # the holder may claim again (e.g. resume in the same process)


def test_a_live_lease_refuses_other_processes_and_a_stale_one_is_taken_over(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    take_over(reg, run.id, pid=4242)
    with pytest.raises(BadInput, match="pid 4242@elsewhere"):
        reg.claim_run(run.id)
    with pytest.raises(JobFailed, match="pid 4242@elsewhere"):
        reg.heartbeat(run.id)  # this process lost the lease: it must stop
    age_heartbeat(reg, run.id, 300)
    assert reg.run_liveness(reg.get_run(run.id)) == STALE
    assert reg.run_liveness(reg.get_run(run.id), stale_after_s=600) == "running"
    with pytest.raises(BadInput, match="pid 4242"):
        reg.claim_run(run.id, stale_after_s=600)
    reg.claim_run(run.id)  # 300 s > 120 s: stale, so it may be claimed
    claimed = reg.get_run(run.id)
    assert (claimed.pid, claimed.status) == (os.getpid(), "running") and reg.run_liveness(claimed) == "running"


@pytest.mark.parametrize("status", ["finished", "failed", "interrupted"])
def test_finished_runs_keep_their_status_and_can_be_claimed_again(reg, status):
    run = reg.start_run("slateq", "diffuse_mix", 2, {})
    done = reg.finish_run(run.id, status, error="stopped" if status != "finished" else None)
    assert done.status == status and done.finished_at is not None and run_liveness(done) == status
    take_over(reg, run.id, pid=1)  # an old holder's pid does not matter once the run has ended
    with Session(reg.engine) as session:
        session.execute(text("UPDATE runs SET status = :s WHERE id = :i"), {"s": status, "i": run.id})
        session.commit()
    reg.claim_run(run.id)
    assert reg.get_run(run.id).status == "running" and reg.get_run(run.id).finished_at is None


def test_bad_statuses_and_unknown_runs(reg):
    run = reg.start_run("slateq", "diffuse_mix", 2, {})
    with pytest.raises(BadInput, match="finishes as"):
        reg.finish_run(run.id, "running")
    with pytest.raises(BadInput, match="no run 99"):
        reg.claim_run(99)
    with pytest.raises(BadInput, match="no run 99"):
        reg.heartbeat(99)


def _claim(home: str, url: str, run_id: int, barrier, results) -> None:
    with open_registry(Settings(home=Path(home), registry_url=url)) as reg:
        barrier.wait(timeout=60)
        try:
            reg.claim_run(run_id)
            results.put(("won", os.getpid()))
        except BadInput as exc:
            results.put(("refused", str(exc)))


def test_two_concurrent_claims_exactly_one_wins(reg, registry_settings):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    reg.finish_run(run.id, "interrupted")
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    workers = [SPAWN.Process(target=_claim, args=(str(registry_settings.home), registry_settings.registry_url, run.id,
                                                  barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(o[0] for o in outcomes) == ["refused", "won"]
    winner = next(o[1] for o in outcomes if o[0] == "won")
    refusal = next(o[1] for o in outcomes if o[0] == "refused")
    assert f"pid {winner}@" in refusal
    assert reg.get_run(run.id).pid == winner


def test_disk_usage_counts_checkpoints_and_resume_states(reg):
    run = reg.start_run("sac-gems", "focused_topdown", 1, {})
    checkpoint = reg.register_checkpoint(run.id, 1, {"w": torch.zeros(100)}, val_return_mean=1.0, val_return_std=0.0,
                                         val_episodes=1)
    state = reg.register_artifact("resume-state", "focused_topdown", b"x" * 5000, run_id=run.id, config={"step": 1})
    other = reg.start_run("sac-gems", "focused_topdown", 2, {})
    reg.register_artifact("resume-state", "focused_topdown", b"y" * 7, run_id=other.id, config={"step": 1})
    assert reg.run_disk_usage(run.id) == checkpoint.size + state.size
    summary = {s.run.id: s for s in reg.overview().runs}
    assert summary[run.id].disk_bytes == checkpoint.size + state.size and summary[other.id].disk_bytes == 7
    assert summary[run.id].liveness == "running"


def test_a_version_1_registry_is_migrated_with_trained_flags(registry_settings):
    config = {"training": {"random_steps": 100}}
    with open_registry(registry_settings) as reg:
        run = reg.start_run("sac-gems", "focused_topdown", 1, config)
        for step in (50, 100, 150):
            reg.register_checkpoint(run.id, step, {"w": torch.zeros(1)}, val_return_mean=float(step),
                                    val_return_std=0.0, val_episodes=1)
        state = reg.register_artifact("resume-state", "focused_topdown", b"s", run_id=run.id, config={"step": 150})
        # Back to schema v1: the columns v2 and v3 added did not exist.
        with reg.engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_runs_group_id"))
            connection.execute(text("ALTER TABLE runs DROP COLUMN group_id"))
            for table, column in (("runs", "pid"), ("runs", "host"), ("runs", "heartbeat_at"),
                                  ("checkpoints", "trained"), ("artifacts", "pruned_at")):
                connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            connection.execute(text(f"UPDATE schema_version SET version = 1 WHERE version = {SCHEMA_VERSION}"))
    with open_registry(registry_settings) as reg:
        assert reg.schema_version == SCHEMA_VERSION == 4
        assert [(c.step, c.trained) for c in reg.list_checkpoints()] == [(50, False), (100, False), (150, True)]
        legacy = reg.get_run(run.id)
        assert legacy.pid is None and legacy.status == "running" and reg.run_liveness(legacy) == "running"
        assert reg.run_liveness(legacy, stale_after_s=0) == STALE  # no heartbeat: counted from its start
        assert [a.id for a in reg.resume_states(run.id)] == [state.id]
        reg.claim_run(run.id, stale_after_s=0)  # and leases work on the migrated rows
        assert reg.get_run(run.id).pid == os.getpid()
