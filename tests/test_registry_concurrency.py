"""Several processes writing one registry at once, and processes dying between file and row."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest

from slatectl.registry import open_registry
from slatectl.settings import Settings

WRITERS = 6
PER_WRITER = 200
SPAWN = multiprocessing.get_context("spawn")


def val_return(step: int) -> float:
    return float((step * 7919) % 1009)  # scattered, so `best` moves around while writers race


def _register_many(home: str, url: str, run_id: int, first_step: int, stride: int, barrier) -> None:
    import torch

    with open_registry(Settings(home=Path(home), registry_url=url)) as reg:
        barrier.wait(timeout=60)  # all writers start together
        for i in range(PER_WRITER):
            step = first_step + i * stride
            reg.register_checkpoint(run_id, step, {"w": torch.tensor([float(step)])}, val_return_mean=val_return(step),
                                    val_return_std=0.0, val_episodes=1)


@pytest.mark.slow
def test_six_processes_registering_at_once_lose_nothing(reg, registry_settings):
    # Three runs, two writers each (interleaved steps), so best/last flags are contended too.
    runs = [reg.start_run("sac-gems", f"env{k}", k, {}).id for k in range(WRITERS // 2)]
    barrier = SPAWN.Barrier(WRITERS)
    workers = [SPAWN.Process(target=_register_many,
                             args=(str(registry_settings.home), registry_settings.registry_url, runs[w // 2], w % 2, 2, barrier))
               for w in range(WRITERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    stuck = [w for w in workers if w.is_alive()]
    for worker in stuck:
        worker.kill()
    assert not stuck, "a writer hung"
    assert [w.exitcode for w in workers] == [0] * WRITERS, "a writer failed (see its stderr above)"

    checkpoints = reg.list_checkpoints()
    assert len(checkpoints) == WRITERS * PER_WRITER
    assert len({c.storage_key for c in checkpoints}) == len(checkpoints)
    for run_id in runs:
        mine = [c for c in checkpoints if c.run_id == run_id]
        assert sorted(c.step for c in mine) == list(range(2 * PER_WRITER))
        best_value = max(val_return(c.step) for c in mine)
        best_step = min(c.step for c in mine if val_return(c.step) == best_value)
        assert [c.step for c in mine if c.is_best] == [best_step]
        assert [c.step for c in mine if c.is_last] == [2 * PER_WRITER - 1]
    report = reg.verify()
    assert report.ok and report.checked == WRITERS * PER_WRITER and report.orphans == []


def _die_while_registering(home: str, url: str, run_id: int, how: str, ready) -> None:
    import torch

    from slatectl.registry.checkpoints import CheckpointRepository
    from slatectl.registry.database import Database

    original_insert = CheckpointRepository.insert_row

    def die_before_insert(self, stored, insert):
        if how == "exit":
            os._exit(3)
        ready.set()
        threading.Event().wait()  # until the parent kills us

    def die_before_commit(self, session, *args):
        original_insert(self, session, *args)
        session.flush()  # the row is in the open transaction, not yet committed
        os._exit(3)

    if how == "in-transaction":
        CheckpointRepository.insert_row = die_before_commit
    else:
        Database.insert_with_file = die_before_insert
    with open_registry(Settings(home=Path(home), registry_url=url)) as reg:
        reg.register_checkpoint(run_id, 2, {"w": torch.ones(3)}, val_return_mean=9.0, val_return_std=0.0, val_episodes=1)


CRASHES = ("exit", "sigkill", "in-transaction")


def test_processes_killed_between_file_and_row_leave_only_orphans(reg, registry_settings):
    """Writers die after their file is stored: by os._exit before the insert, by SIGKILL while blocked
    there, and by os._exit inside the open insert transaction. (All three at once, to keep it quick.)"""
    import torch
    from typer.testing import CliRunner

    from slatectl.cli import app

    runs = {how: reg.start_run("sac-gems", "focused_topdown", k, {}).id for k, how in enumerate(CRASHES)}
    survivors = {how: reg.register_checkpoint(run_id, 1, {"w": torch.zeros(3)}, val_return_mean=1.0,
                                              val_return_std=0.0, val_episodes=1) for how, run_id in runs.items()}
    ready = SPAWN.Event()
    children = {how: SPAWN.Process(target=_die_while_registering, args=(
        str(registry_settings.home), registry_settings.registry_url, runs[how], how, ready)) for how in CRASHES}
    for child in children.values():
        child.start()
    try:
        assert ready.wait(timeout=60), "the SIGKILL child never reached the point between file and row"
        os.kill(children["sigkill"].pid, signal.SIGKILL)
        for child in children.values():
            child.join(timeout=60)
    finally:
        for child in children.values():
            if child.is_alive():
                child.kill()
    assert {how: child.exitcode for how, child in children.items()} == {
        "exit": 3, "sigkill": -signal.SIGKILL, "in-transaction": 3}

    # No dangling rows, and the survivors' flags were untouched by the dead writers.
    assert sorted(c.id for c in reg.list_checkpoints()) == sorted(c.id for c in survivors.values())
    assert all(reg.get_checkpoint(c.id).is_best and reg.get_checkpoint(c.id).is_last for c in survivors.values())
    kept = {c.storage_key for c in survivors.values()}
    orphans = sorted(set(reg.store.iter_keys()) - kept)
    assert len(orphans) == len(CRASHES) and all(k.startswith("checkpoint/") for k in orphans)

    cli = ["--home", str(registry_settings.home), "--registry-url", registry_settings.registry_url]
    runner = CliRunner()
    reported = runner.invoke(app, [*cli, "registry", "verify", "--json"])
    assert reported.exit_code == 0, reported.output
    assert sorted(json.loads(reported.stdout)["orphans"]) == orphans
    refused = runner.invoke(app, [*cli, "registry", "verify", "--fix"])  # no terminal, no --yes: asks nobody
    assert refused.exit_code == 2 and "--yes" in refused.stderr and sorted(reg.store.iter_keys()) == sorted(kept | set(orphans))
    fixed = runner.invoke(app, [*cli, "registry", "verify", "--fix", "--yes"])
    assert fixed.exit_code == 0 and fixed.stdout.count("moved to") == len(CRASHES)
    assert set(reg.store.iter_keys()) == kept
    # The registry accepts the steps the dead writers never finished.
    for run_id in runs.values():
        reg.register_checkpoint(run_id, 2, {"w": torch.ones(3)}, val_return_mean=9.0, val_return_std=0.0, val_episodes=1)
    assert len(reg.list_checkpoints()) == 2 * len(CRASHES) and reg.verify().orphans == []
