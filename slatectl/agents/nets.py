"""Building blocks of the agents' layouts: MLPs, target copies, the checks all params share."""

from __future__ import annotations

import copy
from typing import Sequence

from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """in → (Linear → ReLU) per hidden size → Linear → out (the reference's `hidden_layers_*` nets)."""
    widths = [in_dim, *hidden]
    layers = [layer for a, b in zip(widths, hidden) for layer in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(widths[-1], out_dim))


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off (target networks)."""
    return copy.deepcopy(module).requires_grad_(False)


def common_checks(p) -> list[tuple[bool, str]]:
    """Checks shared by every agent's params dataclass `p` (fields that exist on it), for its `validate()`
    to hand to `slatectl.config_tools.check_params` with its own."""
    checks = [
        (p.capacity >= 1, f"agent.capacity must be >= 1 episode (got {p.capacity})"),
        (p.batch_size >= 1, f"agent.batch_size must be >= 1 episode (got {p.batch_size})"),
        (p.batch_size <= p.capacity,
         f"agent.batch_size ({p.batch_size}) must not exceed agent.capacity ({p.capacity})"),
        (0.0 <= p.gamma <= 1.0, f"agent.gamma must lie in [0, 1] (got {p.gamma})"),
        (p.belief_state_dim >= 1, f"agent.belief_state_dim must be >= 1 (got {p.belief_state_dim})"),
        (p.item_embedd_dim >= 1, f"agent.item_embedd_dim must be >= 1 (got {p.item_embedd_dim})"),
    ]
    checks += [(getattr(p, name) > 0, f"agent.{name} must be > 0 (got {getattr(p, name)})")
               for name in ("q_lr", "pi_lr", "alpha_lr") if hasattr(p, name)]
    if hasattr(p, "tau"):
        checks.append((0.0 < p.tau <= 1.0, f"agent.tau must lie in (0, 1] (got {p.tau})"))
    if hasattr(p, "target_update_frequency"):
        checks.append((p.target_update_frequency >= 1,
                       f"agent.target_update_frequency must be >= 1 (got {p.target_update_frequency})"))
    checks += [(all(w >= 1 for w in getattr(p, name)),
                f"agent.{name} widths must be >= 1 (got {list(getattr(p, name))})")
               for name in ("hidden_qnet", "hidden_pinet") if hasattr(p, name)]
    return checks


def one_of(p, name: str, choices) -> tuple[bool, str]:
    """The check that params field `name` of `p` holds one of `choices`, with the message naming them."""
    value = getattr(p, name)
    return value in choices, f"agent.{name} must be one of {', '.join(choices)} (got {value!r})"
