"""The contract between the training loop (and collection) and every agent.

The loop owns the environment, the step counter, validation, checkpoints and the registry. An agent owns
its networks, belief encoder(s) and optimizers. Observations arrive batched over B users (B = number of
episodes run in parallel), so every method works on a batch. What the loop relies on, in order:

- `set_step(step)`: the training step (episodes completed) before each batch of episodes and each
  update; agents with a schedule (SlateQ's ε) use it. Every agent accepts it.
- `train()` / `eval()` (nn.Module modes): training episodes and updates run in train mode, validation,
  test and collection in eval mode; frozen parts (rankers) stay in eval mode.
- `begin_episodes(first, user_ids, seed)`, then per step `act(env, mode)` and `observe(observation)`;
  `belief_state()` is the state the next action is taken on (stored in collected datasets).
- `update(batch, backward)`: one update; the loss goes through `backward(loss)` (the harness's
  backward; plain `loss.backward()` by default) and scalar metrics come back for the metrics log.
- `optimizers()`: named optimizers, saved with the resume state.
- `updates_during_random_phase`: whether `update` is called during the random phase.
Which pretrained inputs an agent needs (GeMS, MF item table) is declared by its module's `AgentSpec`
(`slatectl.agents.spec`).

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

from dataclasses import dataclass, fields
from typing import Callable, ClassVar, Literal

import torch
from torch import nn

from slatectl.sim.topicrec import Observation, TopicRec

ActMode = Literal["random", "explore", "greedy"]
Backward = Callable[[torch.Tensor], None]


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

    def select(self, index: int | slice) -> "EpisodeBatch":
        """Episodes `index` (an int keeps a batch of one)."""
        part = slice(index, index + 1) if isinstance(index, int) else index
        return EpisodeBatch(*(getattr(self, f.name)[part] for f in fields(self)))


class Agent(nn.Module):
    """Base class. Subclasses set `action_dim` and implement `act`, `observe`, `begin_episodes`,
    `belief_state`, and (trainable agents) `update` and `optimizers`."""

    action_dim: int = 0
    #: Whether `update` is called during the random phase (REINFORCE trains from the start; SAC does not).
    updates_during_random_phase: ClassVar[bool] = False

    #: The training step last given by `set_step` (agents whose schedule must survive a checkpoint keep
    #: it in a buffer instead, as SlateQ does).
    training_step: int = 0

    # -- schedule -----------------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The training step (episodes completed so far) that drives the agent's schedules."""
        self.training_step = int(step)

    # -- acting -------------------------------------------------------------------------------------
    def begin_episodes(self, first: Observation, user_ids: torch.Tensor | None = None, seed: int | None = None) -> None:
        """Start B new episodes: reset the online belief and feed it the reset observation o_0.

        `user_ids` and `seed` identify the episodes; an agent with its own per-user randomness (the
        random policy) keys it on them, the others ignore them."""
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

    def belief_state(self) -> torch.Tensor:
        """(B, S) the online belief state the agent acts on now (stored in collected datasets)."""
        raise NotImplementedError

    # -- learning -----------------------------------------------------------------------------------
    def update(self, batch: EpisodeBatch, backward: Backward = default_backward) -> dict[str, float]:
        """One agent update (e.g. one critic, one actor and one α step for SAC) on a batch of episodes.

        Call `backward(loss)` instead of `loss.backward()`. Returns scalar metrics for the metrics log
        (e.g. {"critic_loss": …, "actor_loss": …, "alpha": …}); every key returned is logged.
        """
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers, saved with resume state and restored on `--resume` (none: a fixed policy)."""
        return {}


class SingleBeliefAgent(Agent):
    """An agent acting on one GRU belief, `self.belief` (SlateQ: the critic's; REINFORCE: the actor's)."""

    belief: nn.Module

    @torch.no_grad()
    def begin_episodes(self, first: Observation, user_ids: torch.Tensor | None = None, seed: int | None = None) -> None:
        self.belief.reset(first)

    def belief_state(self) -> torch.Tensor:
        return self.belief.state

    @torch.no_grad()
    def observe(self, observation: Observation) -> None:
        self.belief.step(observation)
