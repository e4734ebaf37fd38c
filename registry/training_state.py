"""Was the agent trained when a checkpoint was saved? The training loop's random phase, read from the
run's recorded config.

The loop (slatectl/train/loop.py) acts randomly for the first `training.random_steps` episodes and
makes no agent update there (except agents that train from the start, which say so when they register
a checkpoint). The update after episode i happens only for i >= random_steps, so a checkpoint saved at
step s (after s episodes) has seen an update exactly when s > random_steps. A checkpoint saved at
s <= random_steps holds the untrained initial weights: every such checkpoint of a run is the same
policy, and none of them is a meaningful `medium` or `expert`.
"""

from __future__ import annotations

from typing import Any, Mapping


def random_steps(config: Mapping[str, Any] | None) -> int:
    """The run's random phase in steps (0 when the config does not say)."""
    training = (config or {}).get("training") or {}
    try:
        return max(0, int(training.get("random_steps", 0) or 0))
    except (TypeError, ValueError):
        return 0


def trained_at_step(step: int, config: Mapping[str, Any] | None) -> bool:
    """True when a checkpoint saved at `step` follows at least one update (the loop's rule above)."""
    return int(step) > random_steps(config)
