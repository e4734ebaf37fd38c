"""What every agent file builds on (docs/architecture.md, `slatectl/agents/`): the member layout (`Agent`)
and the episode data its stacked form's update takes.

Episode data handed to an update (all tensors on the agent's device; the stacked form takes them with a
leading member dimension K):
    slates       (E, H+1, S) int64   o_0 … o_H: the reset slate, then the slate shown at each step
    clicks       (E, H+1, S) float32 clicks on those slates
    actions      (E, H, A)   float32 the agent's raw action at step t (latent / proto action; A may be 0)
    rec_slates   (E, H, S)   int64   the slate the agent recommended at step t (equals slates[:, t+1])
    rewards      (E, H)      float32 clicks of step t (reward of a_t)
    user_states  (E, H+1, D) float32 hidden true user embedding after each observation (privileged)
with E episodes, H = 100 steps, S = 10 slots, D = 20. The state on which a_t was taken is the belief after
o_0 … o_t.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
from torch import nn

ActMode = Literal["random", "explore", "greedy"]


def default_backward(loss: torch.Tensor) -> None:
    loss.backward()


@dataclass
class EpisodeBatch:
    slates: torch.Tensor
    clicks: torch.Tensor
    actions: torch.Tensor
    rec_slates: torch.Tensor
    rewards: torch.Tensor
    user_states: torch.Tensor

    @property
    def episodes(self) -> int:
        return self.slates.shape[0]

    def to(self, device: torch.device | str) -> "EpisodeBatch":
        return EpisodeBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def first_clicks(self, shown: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(…, H) the first clicked item of the slate paired with the state after o_0 … o_t, and whether it
        has a click: o_{t+1} (the slate a_t produced), or o_t with `shown` (the reference's off-by-one)."""
        part = slice(0, -1) if shown else slice(1, None)
        clicks = self.clicks[..., part, :]
        # argmax returns the first maximal index; slates without a click give 0 and are masked by has_click.
        rank, has_click = clicks.argmax(dim=-1), clicks.sum(dim=-1) > 0
        return self.slates[..., part, :].gather(-1, rank[..., None]).squeeze(-1), has_click

    def not_done(self) -> torch.Tensor:
        """(E·H,) 1 − done per transition in row order e·H + t: done only on an episode's last step (t = H − 1)."""
        E, H = self.rewards.shape[-2:]
        return (torch.arange(E * H, device=self.rewards.device) % H < H - 1).float()


class Agent(nn.Module):
    """A member's layout: one run's weights, buffers and optimizers (a checkpoint is its state dict;
    `optimizers()` says which tensors each trains, in which order; a resume state holds their states), with
    no acting or learning: that is its stacked form's (`slatectl.agents.stacked.StackedAgent`, built from
    K ≥ 1 such layouts). Subclasses set `params`."""

    params: object
    #: Width of the raw action stored with each step (a GeMS latent, a TopK query; 0: slates only).
    action_dim: int = 0
    #: Whether the trainer updates during the random phase (REINFORCE trains from the start; SAC does not).
    updates_during_random_phase: ClassVar[bool] = False

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The layout's named `_optimizers`, saved with resume state, restored on `--resume` (none: a fixed policy)."""
        return getattr(self, "_optimizers", {})
