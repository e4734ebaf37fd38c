"""The step schedule of the training loop (K ≥ 1 runs in lockstep): which steps validate and save, how many
episodes the next batch plays, and whether a step updates the agent.

Batching keeps the algorithm's semantics: random-phase episodes are played `random_phase_batch` at a time
(the policy is random there), learning episodes `parallel_episodes` at a time (default 1, the reference;
more trades policy freshness for speed), and no batch crosses a validation or save step or the end of the
random phase.
"""

from __future__ import annotations

from typing import Callable, Iterator

from slatectl.agents.base import ActMode
from slatectl.train.config import TrainingConfig


class StepSchedule:
    def __init__(self, training: TrainingConfig):
        self.training = training
        self.save_steps = set(training.save_steps())
        self.boundaries = sorted(self.save_steps | set(range(training.val_every, training.max_steps + 1,
                                                             training.val_every)))

    def batches(self, first_step: int, keep_going: Callable[[], bool]) -> Iterator[tuple[int, int, ActMode]]:
        """(first step, episodes, act mode) of each batch from `first_step` to the end, while `keep_going()`."""
        t = self.training
        step = first_step
        while step < t.max_steps and keep_going():
            next_boundary = next((b for b in self.boundaries if b > step), t.max_steps)
            if step < t.random_steps:
                count = min(t.random_phase_batch, next_boundary - step, t.random_steps - step)
            else:
                count = min(t.parallel_episodes, next_boundary - step)
            yield step, count, "random" if step < t.random_steps else "explore"
            step += count

    def updates_at(self, step: int, updates_during_random_phase: bool) -> bool:
        """Whether step `step` (0-based, its episode just played) is followed by an update."""
        return step >= self.training.random_steps or updates_during_random_phase

    def validates_at(self, step: int) -> bool:
        return step % self.training.val_every == 0 or step in self.save_steps
