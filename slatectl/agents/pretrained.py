"""The pretrained inputs handed to agent builders (`spec.build(params, env, inputs)`: only the fields its `needs`
name are filled; `slatectl.train.assembly` finds or builds them), and the checks every builder shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from slatectl.errors import BadInput
from slatectl.sim.topicrec import TopicRec


@dataclass(frozen=True)
class AgentInputs:
    gems: Any = None  # a frozen GeMS module (`rank(z)`, `num_items`, `slate_size`, `latent_dim`)
    gems_bounds: tuple[torch.Tensor, torch.Tensor] | None = None  # (center, scale) of its latent box
    mf: torch.Tensor | None = None  # (N, D) MF item embeddings


def require_input(inputs: AgentInputs, name: str, agent: str) -> Any:
    """The input `name` of `inputs`, or BadInput saying which agent needed it."""
    value = getattr(inputs, name)
    if value is None:
        raise BadInput(f"agent {agent!r} needs the pretrained input {name!r}, which was not provided.")
    return value


def checked_item_table(table: Any, env: TopicRec, what: str) -> torch.Tensor:
    """`table` as a finite float32 (num_items, D) tensor for `env`, or BadInput naming `what`."""
    table = torch.as_tensor(table, dtype=torch.float32)
    if table.ndim != 2 or table.shape[0] != env.config.num_items:
        raise BadInput(f"{what} must be a ({env.config.num_items}, D) item table, got shape {tuple(table.shape)}.")
    if not bool(torch.isfinite(table).all()):
        raise BadInput(f"{what} contains non-finite values.")
    return table
