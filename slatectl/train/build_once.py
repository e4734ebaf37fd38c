"""Shared inputs built once across processes and machines: a registry-level build lock with a lease.

`built_once(registry, key, find, build)` returns `find()` when the input is registered; otherwise it takes
the build lock on `key` and builds (renewing the lease from a background thread), or, while another worker
holds the lock, polls `find()`. A builder that dies stops renewing; its lease expires after
`lease_seconds()` and a waiting worker takes the lock over. The lock lives in the registry, so workers on
different machines see it (a file lock would not span machines, nor survive a lost machine cleanly).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Mapping, TypeVar

from slatectl.registry import Registry, config_hash
from slatectl.settings import lease_seconds

T = TypeVar("T")
Say = Callable[[str], None]

POLL_S = 1.0  # how often a waiting worker looks for the input


def build_key(kind: str, env: str | None, identity: Mapping[str, Any]) -> str:
    """The lock key of one input: its kind, env and config (the same identity the registry finds it by)."""
    return f"{kind}:{env or '-'}:{config_hash(dict(identity))}"


def lock_holder() -> str:
    """This process (host, pid) and a nonce: two builds in one process never share a lock."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PeriodicRenewal:
    """Calls `renew()` every quarter of `lease_s` from a daemon thread (so a kill stops it too) until the
    `with` block ends: the one way a lease (a build lock, a sweep task) is kept alive while work runs. A
    failing renewal (the registry briefly unreachable, the lease taken over) stops the renewals when
    `stop_on_error`, else is retried at the next period; either way the work goes on."""

    def __init__(self, name: str, lease_s: float, renew: Callable[[], object], stop_on_error: bool = True) -> None:
        self.every_s, self.renew, self.stop_on_error = lease_s / 4, renew, stop_on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> "PeriodicRenewal":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.renew()
            except Exception:  # a build's registration is idempotent by key lookup at the end; a task's
                if self.stop_on_error:  # runs are guarded by their own leases
                    return


@contextmanager
def holding(registry: Registry, key: str, holder: str, lease_s: float) -> Iterator[None]:
    """Renews an already acquired lock while the block runs, and releases it at the end."""
    try:
        with PeriodicRenewal(f"build-lock {key}", lease_s, lambda: registry.renew_build_lock(key, holder, lease_s)):
            yield
    finally:
        registry.release_build_lock(key, holder)


def built_once(registry: Registry, key: str, find: Callable[[], T | None], build: Callable[[], T],
               say: Say = print, poll_s: float = POLL_S) -> T:
    holder = lock_holder()
    said = False
    while True:
        found = find()
        if found is not None:
            return found
        lease_s = lease_seconds()
        if registry.acquire_build_lock(key, holder, lease_s):
            with holding(registry, key, holder, lease_s):
                found = find()  # registered between our look and our lock
                return found if found is not None else build()
        if not said:
            say(f"another worker is building {key.split(':')[0]} for {key.split(':')[1]}; waiting for it")
            said = True
        time.sleep(poll_s)
