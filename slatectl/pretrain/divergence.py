"""One rule for every pretraining loop: a training whose loss is not finite has diverged (typically a
learning rate far too high) and fails, so that no NaN model is ever registered."""

from __future__ import annotations

import math
from typing import Mapping

from slatectl.errors import JobFailed


def require_finite_losses(model: str, losses: Mapping[str, float], when: str, optional: tuple[str, ...] = ()) -> None:
    """JobFailed (exit 1) naming the first loss that is NaN or infinite; the caller registers nothing.
    `optional` names losses that are NaN by design in this run (no validation rows): not checked."""
    for name, value in losses.items():
        if name not in optional and not math.isfinite(value):
            raise JobFailed(f"{model} training diverged: the {name} is {value} at {when}, so no model was "
                            "registered. Lower the learning rate and run it again.")
