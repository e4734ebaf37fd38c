"""The metrics log (slatectl/train/metrics_log.py) written through Lightning Fabric's loggers: one CSV row
per step in `<logs>/run-<id>.csv`, TensorBoard scalars beside it, and no step twice after a resume."""

import csv
import importlib.util
import math
import time

import pytest
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

from slatectl.errors import BadInput
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train import metrics_log
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import RunInterrupted
from slatectl.train.metrics_log import MetricsLog
from slatectl.train.loop import Trainer
from slatectl.train.population import group_runs, population_configs
from training_helpers import StopAt

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def _rows(path):
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def _events(folder):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder))
    events.Reload()
    return events


def test_rows_go_through_lightnings_loggers_to_the_runs_csv_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path, 7)
    assert isinstance(log.loggers[0], CSVLogger) and isinstance(log.loggers[1], TensorBoardLogger)
    log.write({"step": 1, "episode_return": 2.5})
    log.write({"step": 2, "episode_return": 3.0, "loss": 0.125, "alpha": None})
    assert _rows(tmp_path / "run-7.csv")[1][-1]["loss"] == "0.125"  # on disk before close (a kill loses nothing)
    log.write({"step": 3, "episode_return": 1.0, "val_return": 4.0, "alpha": 0.2, "loss": float("nan")})
    log.close()

    columns, rows = _rows(tmp_path / "run-7.csv")
    # the documented order: step, episode_return, val_return, then metrics as they first appeared
    assert columns == ["step", "episode_return", "val_return", "loss", "alpha"]
    assert [(r["step"], r["episode_return"], r["val_return"], r["loss"], r["alpha"]) for r in rows] == [
        ("1", "2.5", "", "", ""), ("2", "3", "", "0.125", ""), ("3", "1", "4", "nan", "0.2")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-7.csv", "tensorboard"]  # no version_N folders

    events = _events(tmp_path / "tensorboard" / "run-7")
    assert [(e.step, e.value) for e in events.Scalars("episode_return")] == [(1, 2.5), (2, 3.0), (3, 1.0)]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(2, 0.125)]  # the NaN is not plotted
    assert "step" not in events.Tags()["scalars"]


def test_a_resumed_log_drops_the_steps_after_the_resume_step_and_writes_each_step_once(tmp_path, monkeypatch):
    first = MetricsLog(tmp_path, 3)
    for step in range(1, 8):
        first.write({"step": step, "episode_return": float(step), "q_loss": step / 8})
    first.close()  # killed after step 7; the resume state is at step 5
    # The resumed process starts later. TensorBoard reads a run's event files in name order, and a name is
    # `<whole seconds>.<host>.<pid>.<process-wide counter>`: two files of one process in one second sort by
    # the counter as text, so its 9 → 10 would put the purging file first (this test then failed after
    # tests/test_training.py). A clock one second on gives the resumed file the later name it has in use.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 1.0)
    resumed = MetricsLog(tmp_path, 3, resume_step=5)
    for step in range(6, 10):
        resumed.write({"step": step, "episode_return": 10.0 + step, "q_loss": step / 8, "epsilon": 0.5})
    resumed.close()

    columns, rows = _rows(tmp_path / "run-3.csv")
    assert columns == ["step", "episode_return", "val_return", "q_loss", "epsilon"]
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    # steps 1-5 from the first process, 6-9 from the resumed one (its episode returns are 10 + step)
    assert [float(r["episode_return"]) for r in rows] == [1, 2, 3, 4, 5, 16, 17, 18, 19]
    assert [r["epsilon"] for r in rows] == [""] * 5 + ["0.5"] * 4

    if HAS_TENSORBOARD:
        events = _events(tmp_path / "tensorboard" / "run-3")
        assert [(e.step, e.value) for e in events.Scalars("episode_return")] == [
            (s, float(s) if s <= 5 else 10.0 + s) for s in range(1, 10)]


def test_no_folder_logs_nothing_and_tensorboard_asked_for_but_missing_is_bad_input(tmp_path, monkeypatch):
    nothing = MetricsLog(None, 1)
    nothing.write({"step": 1, "episode_return": 1.0})
    nothing.close()
    assert nothing.path is None and not nothing.loggers

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("Neither `tensorboard` nor `tensorboardX` is available.")

    monkeypatch.setattr(metrics_log, "TensorBoardLogger", missing)
    csv_only = MetricsLog(tmp_path, 2)  # installed-or-not default: CSV only, no error
    assert [type(logger) for logger in csv_only.loggers] == [metrics_log.RunCSVLogger]
    csv_only.close()
    with pytest.raises(BadInput, match="tensorboard"):
        MetricsLog(tmp_path, 4, tensorboard=True)
    assert not (tmp_path / "tensorboard").exists()
    assert [type(logger) for logger in MetricsLog(tmp_path, 5, tensorboard=False).loggers] == [metrics_log.RunCSVLogger]


SMALL = ["training.random_steps=10", "training.val_every=10", "training.val_episodes=8", "training.test_episodes=8",
         "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50"]


def test_an_interrupted_and_resumed_population_logs_each_members_steps_once(tmp_path):
    settings = Settings.resolve(home=tmp_path / "home")
    logs = tmp_path / "logs"
    base = [resolve_run_config("slateq", "focused_topdown", overrides=SMALL,
                               cli_training={"max_steps": 24, "save_every": 12})]
    configs = population_configs(base, [11, 12])
    with open_registry(settings) as registry:
        with pytest.raises((KeyboardInterrupt, RunInterrupted)):
            Trainer(registry, configs, StopAt(17), logs_dir=logs).run(command="test", group="g-logs")
        runs = group_runs(registry, "g-logs")
        for run in runs:  # the kill came after step 17; the common resume state is at step 12
            assert max(int(r["step"]) for r in _rows(logs / f"run-{run.id}.csv")[1]) >= 17
        Trainer.resume(registry, "g-logs", logs_dir=logs)
        assert [r.status for r in group_runs(registry, "g-logs")] == ["finished", "finished"]
    for run in runs:
        _, rows = _rows(logs / f"run-{run.id}.csv")
        steps = [int(r["step"]) for r in rows]
        assert len(steps) == len(set(steps)) and steps == sorted(steps)  # each step once, in order
        assert set(range(11, 25)) <= set(steps) and steps[-1] == 24  # every learning step, redone ones once
        assert [int(r["step"]) for r in rows if r["val_return"]] == [10, 12, 20, 24]  # every val_every and save step
        assert all(math.isfinite(float(r["q_loss"])) for r in rows if int(r["step"]) > 10)
        if HAS_TENSORBOARD:
            events = _events(logs / "tensorboard" / f"run-{run.id}")
            val_steps = [e.step for e in events.Scalars("val_return")]
            assert val_steps == [10, 12, 20, 24]  # every val_every and save step
