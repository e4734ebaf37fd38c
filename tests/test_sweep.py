"""Sweeps (issue 23): the spec, its expansion into population tasks, the registry's sweep rows and
build locks, idempotent checkpoints, and sweeps run by the local executor — including a worker killed
mid-task whose sweep resumes without losing or duplicating anything."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import torch
import yaml
from sqlalchemy import text
from sqlmodel import Session, select
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.errors import BadInput, JobFailed
from slatectl.registry import SCHEMA_VERSION, open_registry
from slatectl.registry.models import BuildLock, Checkpoint, SweepTask, utcnow
from slatectl.sweep.driver import create_sweep, resume_sweep, run_sweep
from slatectl.sweep.executors import ExecutorOptions, check_shared_registry
from slatectl.sweep.spec import parse_spec
from slatectl.sweep.tasks import expand
from slatectl.sweep.worker import run_task
from slatectl.train.build_once import built_once

MINIMAL = {"agents": ["sac-topk-ideal"], "envs": ["focused_topdown"], "seeds": [1, 2], "steps": 300,
           "save_every": 150, "set": {"training.random_steps": 100}}
SMALL_SET = {"training.random_steps": 10, "training.val_every": 20, "training.val_episodes": 8,
             "training.test_episodes": 8, "training.random_phase_batch": 10, "agent.batch_size": 4,
             "agent.capacity": 50}


def small_spec(**changes):
    return {"agents": ["sac-topk-ideal"], "envs": ["focused_topdown"], "seeds": [1, 2], "steps": 40,
            "save_every": 20, "set": dict(SMALL_SET), **changes}


# -- the spec -------------------------------------------------------------------------------------------

def test_the_minimal_spec_of_the_issue_is_accepted_as_written():
    spec = parse_spec(MINIMAL)
    assert (spec.agents, spec.envs, spec.seeds, spec.steps, spec.save_every) == (
        ("sac-topk-ideal",), ("focused_topdown",), (1, 2), 300, 150)
    assert spec.overrides(0) == ["training.random_steps=100"]
    assert parse_spec(spec.to_dict()) == spec  # what the registry stores reads back as the same spec


@pytest.mark.parametrize("change, message", [
    ({"agent": ["sac-gems"]}, "unknown key"),
    ({"agents": ["no-such-agent"]}, "no-such-agent"),
    ({"envs": ["nowhere"]}, "unknown env"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"steps": 0}, "steps must be"),
    ({"set": {"training.no_such_key": 1}}, "no_such_key"),
    ({"sets": []}, "sets must be"),
    ({"resources": {"num_cpus": -1}}, "num_cpus"),
    ({"collect": {"qualities": ["random"]}}, "collect.qualities"),
    ({"collect": {"qualities": ["medium"], "act": "nope"}}, "collect.act"),
    ({"collect": {"qualities": ["medium"], "encoder": "gems"}}, "collect.encoder"),
])
def test_a_bad_spec_is_refused_with_what_is_wrong(change, message):
    with pytest.raises(BadInput, match=message):
        parse_spec({**MINIMAL, **change})


def test_the_cli_refuses_a_bad_spec_with_exit_2_and_records_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**MINIMAL, "steps": -3}))
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["--home", str(home), "sweep", "run", str(spec)])
    assert result.exit_code == 2 and "steps must be" in result.output
    assert not (home / "registry.db").exists()


def test_expansion_covers_every_run_once_in_populations_of_at_most_members_per_task():
    spec = parse_spec({**MINIMAL, "agents": ["sac-topk-ideal", "slateq"], "envs": ["focused_topdown", "diffuse_mix", "focused_mix"],
                       "seeds": [3, 4], "sets": [{}, {"agent.gamma": 0.9}], "members_per_task": 4})
    plans = expand(spec)
    # per (agent, set): 3 envs × 2 seeds = 6 members → tasks of 4 and 2
    assert [len(p.members) for p in plans] == [4, 2] * 4
    runs = Counter((p.agent, p.overrides, member) for p in plans for member in p.members)
    expected = {(agent, tuple(spec.overrides(i)), (env, seed)) for agent, i, env, seed in
                itertools.product(spec.agents, range(2), spec.envs, spec.seeds)}
    assert set(runs) == expected and set(runs.values()) == {1}
    assert "agent.gamma=0.9" in plans[2].overrides and "agent.gamma=0.9" not in plans[0].overrides


def test_an_sqlite_registry_is_refused_for_a_cluster_on_other_machines():
    here = {"10.0.0.1", "127.0.0.1"}
    check_shared_registry("sqlite:///x/registry.db", ["10.0.0.1", "127.0.0.1"], here)  # one machine: fine
    check_shared_registry("postgresql://u@db/s", ["10.0.0.1", "10.0.0.2"], here)
    with pytest.raises(BadInput, match=r"10\.0\.0\.2.*--registry-url postgresql://"):
        check_shared_registry("sqlite:///x/registry.db", ["10.0.0.1", "10.0.0.2"], here)


# -- registry: sweeps, task leases, build locks, idempotent checkpoints ----------------------------------

def test_sweep_rows_and_the_task_lease(reg):
    sweep = reg.create_sweep({"steps": 10}, [{"agent": "a", "overrides": [], "members": [("e", 1), ("e", 2)]},
                                             {"agent": "b", "overrides": ["x.y=1"], "members": [("e", 1)]}], "local")
    tasks = reg.sweep_tasks(sweep.id)
    assert [(t.position, t.agent, t.state, t.members) for t in tasks] == [
        (0, "a", "pending", [["e", 1], ["e", 2]]), (1, "b", "pending", [["e", 1]])]
    first = reg.claim_sweep_task(tasks[0].id, "host:1", stale_after_s=60)
    assert (first.state, first.attempts, first.worker) == ("running", 1, "host:1")
    with pytest.raises(BadInput, match="held by host:1"):
        reg.claim_sweep_task(tasks[0].id, "host:2", stale_after_s=60)
    with Session(reg.engine) as session:  # host:1 died 2 minutes ago
        row = session.get(SweepTask, tasks[0].id)
        row.heartbeat_at = utcnow() - timedelta(seconds=120)
        session.add(row)
        session.commit()
    taken = reg.claim_sweep_task(tasks[0].id, "host:2", stale_after_s=60)
    assert (taken.worker, taken.attempts) == ("host:2", 2)
    with pytest.raises(JobFailed):
        reg.sweep_task_heartbeat(tasks[0].id, "host:1")
    reg.finish_sweep_task(tasks[0].id, "finished")
    with pytest.raises(BadInput, match="already finished"):
        reg.claim_sweep_task(tasks[0].id, "host:3")
    assert [s.id for s in reg.list_sweeps()] == [sweep.id]


def test_a_registry_at_schema_3_gains_the_sweep_tables(registry_settings):
    with open_registry(registry_settings) as reg:
        with reg.engine.begin() as connection:
            for table in ("build_locks", "sweep_tasks", "sweeps"):
                connection.execute(text(f"DROP TABLE {table}"))
            connection.execute(text(f"UPDATE schema_version SET version = 3 WHERE version = {SCHEMA_VERSION}"))
    with open_registry(registry_settings) as reg:
        assert reg.schema_version == SCHEMA_VERSION == 4
        assert reg.create_sweep({}, [{"agent": "a", "overrides": [], "members": [("e", 1)]}], "local").id == 1


def test_registering_a_checkpoint_again_returns_the_first_and_stores_nothing(reg):
    run = reg.start_run("slateq", "focused_mix", 0, {})
    first = reg.register_checkpoint(run.id, 100, {"w": torch.zeros(2)}, val_return_mean=1.0, val_return_std=0.0,
                                    val_episodes=5)
    again = reg.register_checkpoint(run.id, 100, {"w": torch.ones(2)}, val_return_mean=2.0, val_return_std=0.0,
                                    val_episodes=5, existing_ok=True)
    assert again.id == first.id and again.sha256 == first.sha256
    with pytest.raises(BadInput, match="already has checkpoint"):
        reg.register_checkpoint(run.id, 100, {"w": torch.ones(2)}, val_return_mean=2.0, val_return_std=0.0,
                                val_episodes=5)
    assert [c.step for c in reg.list_checkpoints(run_id=run.id)] == [100]
    report = reg.verify()
    assert report.ok and not report.orphans  # the second file was never kept


def test_a_registration_that_loses_the_race_removes_its_file_and_returns_the_winner(reg, monkeypatch):
    from slatectl.registry import checkpoints as module

    run = reg.start_run("slateq", "focused_mix", 0, {})
    winner = reg.register_checkpoint(run.id, 7, {"w": torch.zeros(2)}, val_return_mean=1.0, val_return_std=0.0,
                                     val_episodes=5)
    real = module.registered_at
    calls = []

    def blind_first_look(session, run_id, step):  # the pre-check ran before the other process committed
        calls.append(step)
        return None if len(calls) == 1 else real(session, run_id, step)

    monkeypatch.setattr(module, "registered_at", blind_first_look)
    again = reg.register_checkpoint(run.id, 7, {"w": torch.ones(2)}, val_return_mean=2.0, val_return_std=0.0,
                                    val_episodes=5, existing_ok=True)
    assert len(calls) == 2 and again.id == winner.id
    report = reg.verify()
    assert report.ok and not report.orphans


def test_build_lock_lease(reg):
    assert reg.acquire_build_lock("k", "a", lease_s=60)
    assert not reg.acquire_build_lock("k", "b", lease_s=60)
    assert reg.acquire_build_lock("k", "a", lease_s=60)  # ours already
    reg.renew_build_lock("k", "a", lease_s=60)
    with pytest.raises(JobFailed):
        reg.renew_build_lock("k", "b", lease_s=60)
    reg.release_build_lock("k", "a")
    assert reg.acquire_build_lock("k", "b", lease_s=0.2)
    time.sleep(0.3)  # b died: its lease expired
    assert reg.acquire_build_lock("k", "c", lease_s=60)


def test_concurrent_builders_of_one_input_build_it_once(reg):
    built, results = [], []
    store: dict[str, int] = {}

    def build():
        built.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other thread to find the lock taken
        store["value"] = 42
        return 42

    def worker():
        results.append(built_once(reg, "logged-data:e:abc", lambda: store.get("value"), build, say=lambda _: None,
                                  poll_s=0.05))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42, 42, 42] and len(built) == 1
    with Session(reg.engine) as session:
        assert session.exec(select(BuildLock)).all() == []  # released


def test_a_dead_builders_lock_is_taken_over_after_its_lease(reg, monkeypatch):
    monkeypatch.setenv("SLATECTL_LEASE_S", "4")
    assert reg.acquire_build_lock("gems:e:abc", "dead-host:1:x", lease_s=0.5)
    said = []
    started = time.monotonic()
    value = built_once(reg, "gems:e:abc", lambda: None, lambda: "built", say=said.append, poll_s=0.05)
    assert value == "built" and time.monotonic() - started >= 0.4
    assert said and "waiting" in said[0]


# -- sweeps on this machine ----------------------------------------------------------------------------

def _checkpoint_steps(reg):
    steps: dict[int, list[int]] = {}
    for c in reg.list_checkpoints():
        steps.setdefault(c.run_id, []).append(c.step)
    return steps


def test_a_local_sweep_trains_every_population_and_status_shows_it(sqlite_settings, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(small_spec(envs=["focused_topdown", "diffuse_mix"], members_per_task=2,
                                                   collect={"qualities": ["medium", "expert"], "episodes": 10,
                                                            "encoder": "none", "allow_same": True})))
    runner = CliRunner()
    base = ["--home", str(sqlite_settings.home), "--registry-url", sqlite_settings.registry_url]
    result = runner.invoke(app, [*base, "sweep", "run", str(spec_file), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    sweep_id = int(result.stdout.strip().splitlines()[-1])
    with open_registry(sqlite_settings) as reg:
        tasks = reg.sweep_tasks(sweep_id)
        runs = reg.list_runs()
        assert [t.state for t in tasks] == ["finished", "finished"] and len(runs) == 4
        assert {(r.env, r.seed) for r in runs} == {(e, s) for e in ("focused_topdown", "diffuse_mix") for s in (1, 2)}
        assert {t.group_id for t in tasks} == {r.group_id for r in runs}  # one population per task
        assert sorted(_checkpoint_steps(reg).values()) == [[20, 40]] * 4
        assert reg.get_sweep(sweep_id).state == "finished"
    status = json.loads(runner.invoke(app, [*base, "sweep", "status", str(sweep_id), "--json"]).stdout)
    assert [(t["state"], t["members"], t["step"], len(t["val_returns"])) for t in status["tasks"]] == [
        ("finished", 2, 40, 2)] * 2
    table = runner.invoke(app, [*base, "sweep", "status", str(sweep_id)])
    assert table.exit_code == 0 and "sac-topk-ideal" in table.stdout and "40/40" in table.stdout
    listing = json.loads(runner.invoke(app, [*base, "sweep", "list", "--json"]).stdout)
    assert [(s["sweep_id"], s["finished"], s["tasks"]) for s in listing] == [(sweep_id, 2, 2)]
    # the collection at the end: per env and quality the suggested checkpoint promoted, and its dataset
    with open_registry(sqlite_settings) as reg:
        datasets = reg.list_datasets()
        assert sorted((d.env, d.quality, d.episodes) for d in datasets) == sorted(
            (env, quality, 10) for env in ("focused_topdown", "diffuse_mix") for quality in ("medium", "expert"))
        for d in datasets:
            assert d.checkpoint_id == reg.active_promotion(d.env, d.quality).checkpoint_id
            expert = max(reg.list_checkpoints(env=d.env), key=lambda c: (c.val_return_mean, -c.step))
            if d.quality == "expert":
                assert d.checkpoint_id == expert.id
    again = runner.invoke(app, [*base, "sweep", "resume", str(sweep_id)])  # nothing left: collects nothing twice
    assert again.exit_code == 0, again.output
    with open_registry(sqlite_settings) as reg:
        assert len(reg.list_datasets()) == 4


def _kill_when_saved(settings, task_id, step):
    """Run the task in a child process and SIGKILL it once a checkpoint at `step` is registered."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=run_task, args=(settings, task_id, 1, 4.0))
    child.start()
    deadline = time.monotonic() + 240
    with open_registry(settings) as reg:
        while time.monotonic() < deadline and child.is_alive():
            if any(c.step == step for c in reg.list_checkpoints()):
                break
            time.sleep(0.2)
    assert child.is_alive(), "the task ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.join()


def test_a_task_whose_worker_was_killed_resumes_and_registers_each_step_once(sqlite_settings):
    spec = parse_spec(small_spec(steps=60, lease_timeout_s=4))
    sweep_id = create_sweep(sqlite_settings, spec, "local")
    with open_registry(sqlite_settings) as reg:
        (task,) = reg.sweep_tasks(sweep_id)
    _kill_when_saved(sqlite_settings, task.id, 20)
    with open_registry(sqlite_settings) as reg:
        assert reg.sweep_tasks(sweep_id)[0].state == "running"  # the dead worker never said so
        before = {c.id: (c.run_id, c.step, c.sha256) for c in reg.list_checkpoints()}
    result = resume_sweep(sqlite_settings, sweep_id, "local", ExecutorOptions(jobs=1), say=lambda _: None)
    assert result.failed == {}
    with open_registry(sqlite_settings) as reg:
        (task,) = reg.sweep_tasks(sweep_id)
        assert (task.state, task.attempts) == ("finished", 2)
        after = {c.id: (c.run_id, c.step, c.sha256) for c in reg.list_checkpoints()}
        assert {k: after[k] for k in before} == before  # nothing registered was lost or changed
        assert sorted(_checkpoint_steps(reg).values()) == [[20, 40, 60]] * 2
        assert len(reg.list_runs()) == 2 and {r.status for r in reg.list_runs()} == {"finished"}
        report = reg.verify()
        assert report.ok


def test_the_executor_choices_of_the_cli_are_the_registered_executors():
    from slatectl.cli.sweep_cmd import ExecutorName
    from slatectl.sweep.executors import EXECUTORS

    assert [e.value for e in ExecutorName] == list(EXECUTORS)


def test_the_example_specs_parse_and_the_paper_grid_is_sixty_runs_in_six_populations():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
    paper = parse_spec(yaml.safe_load((root / "paper_sac_gems.yaml").read_text()))
    plans = expand(paper)
    assert len(plans) == 6 and all(len(p.members) == 10 for p in plans)
    assert {env for p in plans for env, _ in p.members} == set(paper.envs) and len(paper.envs) == 6
    assert (paper.steps, paper.collect.qualities) == (100_000, ("medium", "expert"))
    smoke = parse_spec(yaml.safe_load((root / "smoke.yaml").read_text()))
    assert smoke.agents == paper.agents and smoke.collect.qualities == paper.collect.qualities


def test_the_local_executor_reruns_a_task_whose_process_was_killed(sqlite_settings):
    spec = parse_spec(small_spec(steps=60, lease_timeout_s=4))
    killed = []

    def kill_the_worker_after_the_first_save():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            try:  # a fresh registry handle per look: the driver creates the registry meanwhile
                with open_registry(sqlite_settings) as reg:
                    tasks = reg.sweep_tasks(1) if reg.list_sweeps() else []
                    saved = any(c.step == 20 for c in reg.list_checkpoints())
            except BadInput:  # not created yet, or briefly busy: look again
                tasks, saved = [], False
            if tasks and tasks[0].state == "running" and saved:
                pid = int(tasks[0].worker.rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_worker_after_the_first_save)
    killer.start()
    result = run_sweep(sqlite_settings, spec, "local", ExecutorOptions(jobs=1), say=lambda _: None)
    killer.join()
    assert killed and result.failed == {}
    with open_registry(sqlite_settings) as reg:
        (task,) = reg.sweep_tasks(result.sweep_id)
        assert (task.state, task.attempts) == ("finished", 2)
        assert sorted(_checkpoint_steps(reg).values()) == [[20, 40, 60]] * 2
        assert reg.verify().ok
