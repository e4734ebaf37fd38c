"""The contract between the training loop and every agent.

The loop owns the environment, the step counter, validation, checkpoints and the registry. An agent owns
its networks, belief encoder(s), replay buffer semantics and optimizers. Observations arrive batched over
B users (B = number of episodes run in parallel), so every method works on a batch.

Episode data handed to `update` (all tensors on the agent's device):
    slates       (E, H+1, K) int64   o_0 … o_H: the reset slate, then the slate shown at each step
    clicks       (E, H+1, K) float32 clicks on those slates
    actions      (E, H, A)   float32 the agent's raw action at step t (latent / proto action; A may be 0)
    rec_slates   (E, H, K)   int64   the slate the agent recommended at step t (equals slates[:, t+1])
    rewards      (E, H)      float32 clicks of step t (reward of a_t)
    user_states  (E, H+1, D) float32 hidden true user embedding after each observation (privileged)
with E episodes, H = 100 steps, K = 10, D = 20. The state on which a_t was taken is the belief after
o_0 … o_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from torch import nn

from slatectl.sim.topicrec import Observation, TopicRec

ActMode = Literal["random", "explore", "greedy"]


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
        return EpisodeBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class Agent(nn.Module):
    """Base class. Subclasses set `action_dim` and implement the methods below."""

    action_dim: int = 0
    #: Whether `update` is called during the random phase (REINFORCE trains from the start; SAC does not).
    updates_during_random_phase: ClassVar[bool] = False

    def begin_episodes(self, first: Observation) -> None:
        """Start B new episodes: reset the online belief and feed it the reset observation o_0."""
        raise NotImplementedError

    def act(self, env: TopicRec, mode: ActMode) -> tuple[torch.Tensor, torch.Tensor]:
        """(slate (B, K) int64, raw action (B, A) float32) from the current online belief.

        mode "random": the reference's random-phase action; "explore": sampled / ε-greedy training
        action; "greedy": the deterministic evaluation action. `env` gives privileged agents
        (SlateQ) the true relevances; others must not read hidden state from it.
        """
        raise NotImplementedError

    def observe(self, observation: Observation) -> None:
        """Advance the online belief with the observation that followed the last action."""
        raise NotImplementedError

    def update(self, batch: EpisodeBatch, backward: Callable[[torch.Tensor], None]) -> dict[str, float]:
        """One agent update (e.g. one critic, one actor and one α step for SAC) on a batch of episodes.

        Call `backward(loss)` instead of `loss.backward()` (Lightning Fabric's backward). Returns scalar
        metrics for logging (e.g. {"critic_loss": …, "actor_loss": …, "alpha": …}).
        """
        raise NotImplementedError

    def belief_state(self) -> torch.Tensor:
        """(B, S) the online belief state the agent acts on now (stored in collected datasets)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers, saved with resume state and restored on `--resume`."""
        raise NotImplementedError


class SingleBeliefAgent(Agent):
    """An agent acting on one GRU belief, `self.belief` (SlateQ: the critic's; REINFORCE: the actor's)."""

    belief: nn.Module

    @torch.no_grad()
    def begin_episodes(self, first: Observation) -> None:
        self.belief.reset(first)

    def belief_state(self) -> torch.Tensor:
        return self.belief.state

    @torch.no_grad()
    def observe(self, observation: Observation) -> None:
        self.belief.step(observation)
