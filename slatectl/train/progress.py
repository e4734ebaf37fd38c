"""Progress reporting of a training run: a live bar on a terminal, plain periodic lines elsewhere.

The loop calls `start`, then `advance(TrainingProgress)` after every batch of steps, then `stop`;
`message` is for one-off lines (inputs being built, warnings, "resuming run 3 at step 2,000").
The ETA comes from the average rate of the current phase (random, then learning), which is stable where
a moving window of a few batches jumps with every validation pause; during the random phase the learning
rate is not known yet, so the report says when the random phase ends instead of guessing. Numbers are
for people: thousands separators, one decimal for returns, no `None`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass(frozen=True)
class TrainingProgress:
    step: int  # steps done
    total_steps: int
    random_steps: int  # random actions before this step
    episode_return: float  # mean return of the latest training episodes
    val_return: float | None  # the latest validation return, if any yet
    update_seconds: float | None  # mean time of one step's agent update (a population: its stacked update of
    # all members); None before the first update
    updates_during_random_phase: bool = False  # REINFORCE: updates from the first step


class TrainingReporter:
    """What the loop reports to; this base reports nothing (the default: a run with no display)."""

    def message(self, text: str) -> None:
        pass

    def start(self, total_steps: int, first_step: int, random_steps: int) -> None:
        pass

    def advance(self, progress: TrainingProgress) -> None:
        pass

    def stop(self) -> None:
        pass


class PhaseClock:
    """Steps per second averaged over the current phase (random, then learning), and the ETA."""

    MIN_SECONDS = 2.0  # no rate before the phase has run this long (a first batch is not representative)

    def __init__(self, first_step: int, random_steps: int, clock=time.perf_counter):
        self.clock, self.random_steps = clock, random_steps
        self.phase_random = first_step < random_steps
        self.phase_start = (clock(), first_step)

    def update(self, step: int) -> bool:
        """Whether the random phase ended at `step` (the learning phase's rate starts there)."""
        ended = self.phase_random and step >= self.random_steps
        if ended:
            self.phase_random = False
            self.phase_start = (self.clock(), step)
        return ended

    def rate(self, step: int) -> float | None:
        started, first = self.phase_start
        elapsed = self.clock() - started
        return None if elapsed < self.MIN_SECONDS or step <= first else (step - first) / elapsed

    def remaining(self, step: int, total: int) -> float | None:
        """Seconds to the end of the run (learning phase) or of the random phase (random phase)."""
        rate = self.rate(step)
        end = min(self.random_steps, total) if self.phase_random else total
        return None if rate is None else max(end - step, 0) / rate


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def random_phase_label(random_steps: int, updates_during_random_phase: bool = False) -> str:
    if updates_during_random_phase:
        return f"random phase: random actions until step {random_steps:,} (this agent updates from the start)"
    return f"random phase: no updates until step {random_steps:,}"


def describe(progress: TrainingProgress, clock: PhaseClock) -> str:
    """The status text shared by both reporters (everything but the step counter)."""
    random_phase = progress.step < progress.random_steps
    parts = [random_phase_label(progress.random_steps, progress.updates_during_random_phase)] if random_phase else []
    rate = clock.rate(progress.step)
    updating = progress.update_seconds is not None and (progress.updates_during_random_phase or not random_phase)
    if rate is not None:  # a step is one episode then one update: the update's share, not a second rate
        update = f" (update {1000 * progress.update_seconds:,.0f} ms of each)" if updating else ""
        per_s = f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"
        parts.append(f"{per_s} steps/s{update}")
    elif updating:
        parts.append(f"update {1000 * progress.update_seconds:,.0f} ms per step")
    parts += [f"return {progress.episode_return:.1f}",
              "val —" if progress.val_return is None else f"val {progress.val_return:.1f}"]
    remaining = clock.remaining(progress.step, progress.total_steps)
    if progress.step < progress.total_steps and random_phase and progress.random_steps < progress.total_steps:
        parts.append("random phase ends in " + ("…" if remaining is None else f"~{format_duration(remaining)}"))
    elif progress.step < progress.total_steps:
        parts.append("ETA " + ("estimating…" if remaining is None else format_duration(remaining)))
    return ", ".join(parts)


class PlainReporter(TrainingReporter):
    """One plain line every `every_s` seconds, at the end of the random phase and at the last step (for
    logs and CI)."""

    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = 10.0, clock=time.perf_counter):
        self.label, self.stream, self.every_s, self.clock = label, stream or sys.stderr, every_s, clock

    def message(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.stream, flush=True)

    def start(self, total_steps: int, first_step: int, random_steps: int) -> None:
        self._phase_clock = PhaseClock(first_step, random_steps, self.clock)
        self._last_line = self.clock()
        if first_step < random_steps:
            self.message(f"random phase: random actions until step {random_steps:,}")

    def advance(self, progress: TrainingProgress) -> None:
        phase_ended = self._phase_clock.update(progress.step)
        now = self.clock()
        if now - self._last_line < self.every_s and not phase_ended and progress.step < progress.total_steps:
            return
        self._last_line = now
        share = 100 * progress.step / progress.total_steps
        self.message(f"step {progress.step:,}/{progress.total_steps:,} ({share:.0f}%), "
                     + describe(progress, self._phase_clock))


class RichReporter(TrainingReporter):
    """A live progress bar with the same status text (for terminals)."""

    def __init__(self, label: str, console: Console):
        self.label, self.console = label, console

    def message(self, text: str) -> None:
        self.console.print(f"[dim]{self.label}[/] {text}", highlight=False)

    def start(self, total_steps: int, first_step: int, random_steps: int) -> None:
        self._phase_clock = PhaseClock(first_step, random_steps)
        self.progress = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console)
        self.progress.start()
        status = random_phase_label(random_steps) if first_step < random_steps else ""
        self.task = self.progress.add_task("train", total=total_steps, completed=first_step, status=status)

    def advance(self, progress: TrainingProgress) -> None:
        self._phase_clock.update(progress.step)
        self.progress.update(self.task, completed=progress.step, status=describe(progress, self._phase_clock))

    def stop(self) -> None:
        self.progress.stop()


def make_reporter(label: str, console: Console) -> TrainingReporter:
    """A live bar when `console` is a terminal, plain periodic lines otherwise."""
    return RichReporter(label, console) if console.is_terminal else PlainReporter(label, console.file)
