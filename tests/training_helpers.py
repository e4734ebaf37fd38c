"""Helpers shared by the training tests."""

from __future__ import annotations


class StopAt:
    """A progress reporter that interrupts training after a given step, as a kill or Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def message(self, text):
        pass

    def start(self, total, first, random_steps):
        pass

    def advance(self, progress):
        if progress.step >= self.step:
            raise KeyboardInterrupt

    def stop(self):
        pass
