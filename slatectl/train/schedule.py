"""The step schedule of the training loop (K ≥ 1 runs in lockstep).

Which steps validate and save, how many episodes the next batch plays (random-phase episodes in blocks of
`random_phase_batch`, learning episodes `parallel_episodes` at a time, never across a validation or save
step or the end of the random phase), and whether a step updates the agent.
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
        step = first_step
        while step < self.training.max_steps and keep_going():
            count = self.episodes_at(step)
            yield step, count, "random" if self.random_phase(step) else "explore"
            step += count

    def random_phase(self, step: int) -> bool:
        return step < self.training.random_steps

    def episodes_at(self, step: int) -> int:
        """Episodes of the batch that starts after `step` steps."""
        t = self.training
        next_boundary = next((b for b in self.boundaries if b > step), t.max_steps)
        if self.random_phase(step):
            return min(t.random_phase_batch, next_boundary - step, t.random_steps - step)
        return min(t.parallel_episodes, next_boundary - step)

    def updates_at(self, step: int, updates_during_random_phase: bool) -> bool:
        """Whether step `step` (0-based, its episode just played) is followed by an update."""
        return step >= self.training.random_steps or updates_during_random_phase

    def validates_at(self, step: int) -> bool:
        return step % self.training.val_every == 0 or step in self.save_steps

    def saves_at(self, step: int) -> bool:
        return step in self.save_steps
