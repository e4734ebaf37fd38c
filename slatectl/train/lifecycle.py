"""A run's life in the registry: stop requests (signals) and the heartbeat that keeps its lease.

Stop requests: SIGTERM, SIGHUP and Ctrl-C make a run stop at its next safe point.

While a `StopRequests` block is active (main thread only: Python delivers signals there), SIGTERM and
SIGHUP (a scheduler's kill, a closed terminal) and the first Ctrl-C only record the request; the loop
checks `requested` between batches of steps, where everything registered so far is complete, and ends
the run as `interrupted`. A second Ctrl-C raises KeyboardInterrupt at once, as usual. The previous
handlers are restored when the block ends.

Heartbeat: while the run is alive it renews its lease about every 30 s, so that `--resume` can refuse
a run that is still running elsewhere and `inspect` can tell a dead run (stale lease) from a live one.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from slatectl.settings import lease_seconds

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None),
                                 signal.SIGINT) if s is not None)


def signal_exit_code(signal_name: str) -> int:
    """The exit code of a command stopped by a signal: 128 + its number, as shells report a program the
    signal killed (130 for Ctrl-C / SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + int(signal.Signals[signal_name])


class StopRequests:
    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name, once one arrived
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(number).name


class Heartbeat:
    """Renews the run's lease in the registry (`registry.heartbeat`) at most every `every_s` seconds;
    `beat_if_due` is cheap enough to call after every batch of steps. Default: a quarter of the lease
    (`settings.lease_seconds()`, 30 s of the default 120 s)."""

    def __init__(self, registry, run_id: int, every_s: float | None = None, clock=time.monotonic):
        every_s = lease_seconds() / 4 if every_s is None else every_s
        self.registry, self.run_id, self.every_s, self.clock = registry, run_id, every_s, clock
        self.registry.heartbeat(run_id)
        self._last = clock()

    def beat_if_due(self) -> None:
        now = self.clock()
        if now - self._last >= self.every_s:
            self.registry.heartbeat(self.run_id)
            self._last = now
