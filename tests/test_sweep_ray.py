"""A sweep on a real two-node Ray cluster over a real PostgreSQL registry, surviving the loss of a node
(issue 23). The cluster is a head and a worker node started with `ray start` on this machine (one CPU
each); the test kills every process of the worker node while the sweep's two tasks train — one on each
node — and checks that the sweep still finishes with nothing lost or registered twice. Skipped, saying
why, only when Ray or PostgreSQL cannot start here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from slatectl.cli import app
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.config import TrainingConfig

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STEPS, SAVE_EVERY = 120, 60
SHRUNK = {  # pretraining and the loop shrunk so that the whole sweep takes about a minute on 2 cores
    "training.random_steps": 100, "training.val_every": 60, "training.val_episodes": 8, "training.test_episodes": 8,
    "training.random_phase_batch": 50, "agent.batch_size": 4, "agent.capacity": 200,
    "logged.episodes": 200, "gems.max_epochs": 1, "gems.max_slates": 4000, "mf.max_batches": 30,
    "mf.eval_every_batches": 10,
}
SPEC = {"agents": ["sac-gems", "sac-topk-mf"], "envs": ["focused_topdown", "diffuse_mix"], "seeds": [1, 2],
        "steps": STEPS, "save_every": SAVE_EVERY, "set": SHRUNK, "members_per_task": 4,
        "resources": {"num_cpus": 1}, "max_retries": 3, "lease_timeout_s": 8}


@pytest.fixture
def ray_cluster():
    from ray_cluster import RayUnavailable, start_cluster

    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLATECTL_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        cluster = start_cluster(env)
    except RayUnavailable as exc:
        pytest.skip(f"no local Ray cluster could be started: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def test_a_sweep_survives_losing_a_ray_worker_node(ray_cluster, postgres_server, tmp_path):
    settings = Settings(home=tmp_path / "home", registry_url=postgres_server.create_database())
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    driver = subprocess.Popen(
        [str(Path(sys.executable).parent / "slatectl"), "--home", str(settings.home), "--registry-url", settings.registry_url,
         "sweep", "run", str(spec_file), "--executor", "ray", "--address", ray_cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ray_cluster.env)
    try:
        with open_registry(settings) as reg:
            def both_training_and_one_saved():
                sweeps = reg.list_sweeps()
                tasks = reg.sweep_tasks(sweeps[0].id) if sweeps else []
                running = [t for t in tasks if t.state == "running"]
                return len(running) == 2 and reg.list_checkpoints() and running

            running = _wait_for(both_training_and_one_saved, 240, "both tasks to train and a checkpoint to exist")
            killed = ray_cluster.kill_worker_node()
            killed_tasks = [t for t in running if int(t.worker.rsplit(":", 1)[1]) in killed]
            assert len(killed_tasks) == 1, (running, killed)  # the worker node was training one of them
        output, _ = driver.communicate(timeout=400)
        (tmp_path / "driver.log").write_text(output)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, output[-3000:]
    assert "resuming population" in output  # the retried task continued its runs from their resume states

    save_steps = TrainingConfig(max_steps=STEPS, save_every=SAVE_EVERY).save_steps()
    with open_registry(settings) as reg:
        (sweep,) = reg.list_sweeps()
        tasks = reg.sweep_tasks(sweep.id)
        assert sweep.state == "finished" and [t.state for t in tasks] == ["finished", "finished"]
        retried = reg.get_sweep_task(killed_tasks[0].id)
        assert retried.attempts >= 2  # the lost task ran again …
        runs = reg.list_runs()
        assert len(runs) == 8 and {r.status for r in runs} == {"finished"}  # … resuming its runs, not new ones
        assert Counter(r.group_id for r in runs) == {t.group_id: 4 for t in tasks}
        steps = {r.id: [c.step for c in reg.list_checkpoints(run_id=r.id)] for r in runs}
        assert all(s == save_steps for s in steps.values()), steps
        with reg.engine.connect() as connection:
            twice = connection.execute(text("SELECT run_id, step FROM checkpoints GROUP BY run_id, step "
                                            "HAVING count(*) > 1")).all()
            inputs = connection.execute(text("SELECT kind, env, config_hash, count(*) FROM artifacts WHERE kind IN "
                                             "('logged-data', 'gems', 'mf') GROUP BY kind, env, config_hash")).all()
        assert twice == []
        # each shared input built once: one logged data and one MF per env, one GeMS per env and seed
        assert {row[3] for row in inputs} == {1}
        assert Counter(row[0] for row in inputs) == {"logged-data": 2, "mf": 2, "gems": 4}
        assert reg.verify().ok
    verify = CliRunner().invoke(app, ["--home", str(settings.home), "--registry-url", settings.registry_url,
                                      "registry", "verify"])
    assert verify.exit_code == 0, verify.output
