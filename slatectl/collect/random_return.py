"""The uniform random slate policy's mean return on an env: a simulator rollout.

The registry records and reads this number but never runs the simulator; `ckpt promote` (the medium
rule's lower anchor) and the Minari export (`ref_min_score`) pass this function to
`slatectl.registry.resolve_random_return` / `Registry.suggest_checkpoint`.
"""

from __future__ import annotations

import importlib


def compute_random_return(env: str) -> float:
    # The simulator (torch) is imported only when a rollout is actually needed: registry commands such
    # as `ckpt list` import this module and must start without torch (the CLI's start-up rule).
    rollout = importlib.import_module("slatectl.sim.rollout")
    return float(rollout.random_return(env))
