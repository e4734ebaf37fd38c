"""A run's life in the registry: stop requests (signals) and the heartbeat that keeps its lease.

While a `StopRequests` block is active (main thread only: Python delivers signals there), SIGTERM and
SIGHUP (a scheduler's kill, a closed terminal) and the first Ctrl-C only record the request; the loop
checks `requested` between batches of steps, where everything registered so far is complete, and ends
the run as `interrupted`. A second Ctrl-C raises KeyboardInterrupt at once, as usual. The previous
handlers are restored when the block ends.
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
    """128 + the signal's number, as shells report a program the signal killed (130 for Ctrl-C / SIGINT,
    143 for SIGTERM, 129 for SIGHUP)."""
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
    """Renews the leases of `run_ids` at most every quarter of a lease (`settings.lease_seconds()`), so that
    `--resume` can refuse a run still running elsewhere and `inspect` can tell a dead run (stale lease) from a
    live one; `beat_if_due` is cheap enough to call after every batch of steps."""

    def __init__(self, registry, run_ids: list[int]):
        self.registry, self.run_ids, self.every_s = registry, run_ids, lease_seconds() / 4
        self._last = float("-inf")  # the first beat is at once
        self.beat_if_due()

    def beat_if_due(self) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            for run_id in self.run_ids:
                self.registry.heartbeat(run_id)
