"""Fixed policies' mean returns on an env (simulator rollouts): the uniform random slate policy and the
short-term oracle.

The registry records and reads the random return but never runs the simulator; `ckpt promote` (the medium
rule's lower anchor) and the Minari export (`ref_min_score`) pass `compute_random_return` to
`slatectl.registry.resolve_random_return` / `Registry.suggest_checkpoint`. `inspect run --plot` draws both
as reference levels of a learning curve.
"""

from __future__ import annotations

import importlib


def compute_random_return(env: str) -> float:
    # The simulator (torch) is imported only when a rollout is actually needed: registry commands such
    # as `ckpt list` import this module and must start without torch (the CLI's start-up rule).
    rollout = importlib.import_module("slatectl.sim.rollout")
    return float(rollout.random_return(env))


def compute_oracle_return(env: str) -> float:
    """The short-term oracle's mean return on the random return's users (about 5 s on one CPU core)."""
    rollout = importlib.import_module("slatectl.sim.rollout")
    return float(rollout.oracle_return(env))
