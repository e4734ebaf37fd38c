"""The uniform random slate policy's mean return on an env: a simulator rollout.

The registry records and reads this number but never runs the simulator; `ckpt promote` (the medium
rule's lower anchor) and the Minari export (`ref_min_score`) pass this function to
`slatectl.registry.resolve_random_return` / `Registry.suggest_checkpoint`.
"""

from __future__ import annotations

from slatectl.sim.rollout import random_return


def compute_random_return(env: str) -> float:
    return float(random_return(env))
