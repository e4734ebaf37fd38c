"""A run's life: compact resume states pruned to --keep-resume, metrics logs without duplicate steps after
a resume, SIGTERM to a real training process, progress lines without a terminal, the untrained warning."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from slatectl.agents.base import EpisodeBatch
from slatectl.cli import app
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.registry import RESUME_STATE_KIND
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer
from slatectl.train.progress import PhaseClock, PlainReporter, TrainingProgress, describe
from slatectl.train.replay import EpisodeReplay
from training_helpers import StopAt

SMALL = [
    "training.random_steps=10", "training.val_every=10", "training.val_episodes=8", "training.test_episodes=8",
    "training.random_phase_batch=10", "agent.batch_size=4", "agent.capacity=50",
]


def _resume_states(registry, run_id):
    return sorted((a for a in registry.list_artifacts(kind=RESUME_STATE_KIND) if a.run_id == run_id),
                  key=lambda a: a.config["step"])


def _csv_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# -- resume states ----------------------------------------------------------------------------------------

def test_replay_state_holds_only_the_filled_episodes_and_restores_sampling_exactly():
    def episodes(n, seed):
        g = torch.Generator().manual_seed(seed)
        slates = torch.randint(0, 1000, (n, 101, 10), generator=g)
        return EpisodeBatch(slates, torch.randint(0, 2, (n, 101, 10), generator=g).float(), torch.randn(n, 100, 3, generator=g),
                            slates[:, 1:], torch.rand(n, 100, generator=g), torch.randn(n, 101, 20, generator=g))

    replay = EpisodeReplay(capacity=10_000, batch_size=4)
    replay.add(episodes(7, 1))
    state = replay.state_dict()
    assert state["storage.slates"].shape[0] == 7
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert buffer.tell() < 1_000_000  # 7 episodes, not the 10,000 preallocated (≈ 200 MB)
    restored = EpisodeReplay(capacity=10_000, batch_size=4)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    a, b = replay.sample(torch.Generator().manual_seed(3)), restored.sample(torch.Generator().manual_seed(3))
    for field in ("slates", "clicks", "actions", "rewards", "user_states"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    replay.add(episodes(3, 2))
    restored.add(episodes(3, 2))
    assert torch.equal(replay.sample(torch.Generator().manual_seed(4)).actions,
                       restored.sample(torch.Generator().manual_seed(4)).actions)


@pytest.mark.parametrize("keep", [1, 2])
def test_only_the_newest_resume_states_are_kept(tmp_path, keep):
    settings = Settings.resolve(home=tmp_path / "home")
    config = resolve_run_config("sac-topk-ideal", "focused_mix", overrides=SMALL,
                                cli_training={"max_steps": 40, "save_every": 10, "keep_resume": keep})
    with open_registry(settings) as registry:
        result = Trainer(registry, config).run(command="test")[0]
        states = _resume_states(registry, result.run_id)
        files = [registry.store.path_for(a.storage_key) for a in states]
        verify = registry.verify()
        assert [c.step for c in result.checkpoints] == [10, 20, 30, 40]
    assert [a.config["step"] for a in states] == [40 - 10 * i for i in reversed(range(keep))]
    assert all(f.is_file() for f in files)
    assert verify.ok and not verify.orphans  # pruned rows took their files with them


def test_the_issue_command_steps_10_save_every_3_keeps_one_small_resume_state(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["--home", str(home), "train", "sac-topk-ideal", "--env", "focused_topdown",
                                      "--steps", "10", "--save-every", "3", "--set", "training.test_episodes=50"])
    assert result.exit_code == 0, result.output
    assert "never updated" in result.output  # 10 steps ≤ the 2,000-step random phase
    with open_registry(Settings.resolve(home=home)) as registry:
        run = registry.list_runs()[0]
        assert [c.step for c in registry.list_checkpoints(run_id=run.id)] == [3, 6, 9, 10]
        states = _resume_states(registry, run.id)
        assert run.config["runtime"]["torch_threads"] == torch.get_num_threads()
    assert [a.config["step"] for a in states] == [10]  # --keep-resume 1
    assert states[0].size < 5_000_000  # 10 episodes (the replay's default capacity is 10,000)


# -- metrics log ------------------------------------------------------------------------------------------

def test_every_metric_is_logged_and_a_resume_repeats_no_step(tmp_path):
    settings = Settings.resolve(home=tmp_path / "home")
    logs = tmp_path / "logs"
    config = resolve_run_config("slateq", "focused_mix", overrides=SMALL, cli_training={"max_steps": 40, "save_every": 20})
    with open_registry(settings) as registry:
        with pytest.raises(KeyboardInterrupt):
            Trainer(registry, config, StopAt(33), logs_dir=logs).run(command="test")[0]
        run_id = registry.list_runs()[0].id
        assert registry.get_run(run_id).status == "interrupted"
        before = _csv_rows(logs / f"run-{run_id}.csv")
        assert max(int(r["step"]) for r in before) == 33
        assert [v.step for v in registry.validations(run_id)] == [10, 20, 30]  # 30: after the last save
        Trainer.resume(registry, run_id, logs_dir=logs)  # redoes step 30's validation, recorded once
        assert registry.get_run(run_id).status == "finished"
        assert [v.step for v in registry.validations(run_id)] == [10, 20, 30, 40]
    rows = _csv_rows(logs / f"run-{run_id}.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 40 and 21 in steps  # redone after step 20, once
    columns = list(rows[0])
    assert columns[:3] == ["step", "episode_return", "val_return"]
    assert {"q_loss", "epsilon", "q_mean", "target_mean", "kept_transitions"} <= set(columns)
    assert all(r["q_loss"] for r in rows if int(r["step"]) > 10)  # SlateQ updates after the random phase
    assert [int(r["step"]) for r in rows if r["val_return"]] == [10, 20, 30, 40]

    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(logs / "tensorboard" / f"run-{run_id}"))
    events.Reload()
    assert {"q_loss", "epsilon"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_return")] == [10, 20, 30, 40]


# -- signals ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_stops_a_training_process_which_is_then_resumed(tmp_path):
    home = tmp_path / "home"
    args = [sys.executable, "-c", "from slatectl.cli import main; main()", "--home", str(home), "train", "sac-topk-ideal", "--env", "focused_mix",
            "--steps", "100", "--save-every", "20"]
    for item in SMALL:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    settings = Settings.resolve(home=home)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (home / "registry.db").exists():
                with open_registry(settings) as registry:
                    if registry.list_checkpoints():
                        break
            time.sleep(0.5)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err  # 143, as a shell reports a SIGTERM'd program
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    with open_registry(settings) as registry:
        run = registry.list_runs()[0]
        kept = [c.step for c in registry.list_checkpoints(run_id=run.id)]
        assert run.status == "interrupted" and kept and kept[-1] < 100
        assert all(step % 20 == 0 for step in kept)
    resumed = CliRunner().invoke(app, ["--home", str(home), "train", "sac-topk-ideal", "--resume", str(run.id)])
    assert resumed.exit_code == 0, resumed.output
    with open_registry(settings) as registry:
        assert registry.get_run(run.id).status == "finished"
        assert [c.step for c in registry.list_checkpoints(run_id=run.id)] == list(range(20, 101, 20))


# -- progress ---------------------------------------------------------------------------------------------

class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_progress_lines_label_the_random_phase_and_give_a_steady_eta():
    clock, stream = _FakeClock(), io.StringIO()
    reporter = PlainReporter("sac/focused_mix", stream, every_s=10, clock=clock)
    reporter.start(total_steps=3000, first_step=0, random_steps=2000)
    for step in range(200, 2001, 200):  # random phase: 100 steps/s
        clock.now += 2.0
        reporter.advance(TrainingProgress(step, 3000, 2000, 40.123456789, None, None))
    etas = []
    for step in range(2010, 3001, 10):  # learning: 1 step/s, with a 30 s validation pause at step 2,500
        clock.now += 10.0 + (30.0 if step == 2500 else 0.0)
        reporter.advance(TrainingProgress(step, 3000, 2000, 120.0, 130.55, 0.125))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "sac/focused_mix: random phase: random actions until step 2,000"
    assert any("random phase: no updates until step 2,000" in line and "random phase ends in ~" in line for line in lines)
    assert all("None" not in line and "40.123" not in line for line in lines)
    assert lines[-1].startswith("sac/focused_mix: step 3,000/3,000 (100%)") and "val 130.6" in lines[-1]
    for line in lines:
        if "ETA " in line and "estimating" not in line:
            step = int(line.split("step ")[1].split("/")[0].replace(",", ""))
            etas.append((step, line.split("ETA ")[1]))
    assert len(etas) > 50
    # Whole-phase average rate: the ETA of a step is within 2× of the true remaining time (1 s/step +
    # pauses), never jumping by 5× after the validation pause.
    seconds = lambda text: sum(int(n) * {"s": 1, "min": 60, "h": 3600}[u] for n, u in zip(text.split()[::2], text.split()[1::2]))  # noqa: E731
    for step, text in etas:
        remaining = 3000 - step
        assert remaining / 2 <= seconds(text) <= remaining * 2 + 60, (step, text)


def test_progress_gives_one_rate_and_the_update_as_part_of_a_step():
    """A step is one episode then one update: the line shows steps/s and how long the update of each step
    takes, not a second, larger "updates/s" rate that reads as if updates outran steps."""
    clock = _FakeClock()
    phases = PhaseClock(first_step=2000, random_steps=2000, clock=clock)
    clock.now = 10.0  # 20 steps in 10 s: 2 steps/s, of which 125 ms per step updating
    line = describe(TrainingProgress(2020, 3000, 2000, 50.0, None, 0.125), phases)
    assert "2.0 steps/s (update 125 ms of each)" in line and "updates/s" not in line
    random_phase = describe(TrainingProgress(100, 3000, 2000, 50.0, None, None), PhaseClock(0, 2000, clock))
    assert "update" not in random_phase.replace("no updates until", "")  # no update yet, nothing said about one


def test_phase_clock_waits_for_a_representative_rate():
    clock = _FakeClock()
    phases = PhaseClock(first_step=0, random_steps=100, clock=clock)
    clock.now = 0.5
    assert phases.rate(50) is None  # too early to tell
    clock.now = 4.0
    assert phases.rate(100) == pytest.approx(25.0)
    phases.update(100)  # the learning phase starts: its rate is measured on its own
    clock.now = 5.0
    assert phases.rate(101) is None


def test_a_run_shorter_than_the_random_phase_reports_its_own_end():
    clock, stream = _FakeClock(), io.StringIO()
    reporter = PlainReporter("run 1", stream, every_s=1, clock=clock)
    reporter.start(total_steps=10, first_step=0, random_steps=2000)
    clock.now = 5.0
    reporter.advance(TrainingProgress(5, 10, 2000, 1.0, None, None))
    clock.now = 10.0
    reporter.advance(TrainingProgress(10, 10, 2000, 1.0, 199.25, None))
    middle, last = stream.getvalue().splitlines()[-2:]
    assert "ETA 5 s" in middle and "random phase ends" not in middle
    assert "ETA" not in last and "val 199.2" in last
