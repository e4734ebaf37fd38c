"""SlateQ for a population of K runs: the members' Q-nets and beliefs stacked, one kernel for all.

The member state dicts (`belief.*`, `q.*`, `q_target.*`, the privileged click-model buffers `env_items`,
`env_item_topics`, `propensities`, the schedule buffers `step` and `update_count`) are stacked along a
leading member dimension (`StackedAgent`); a member's environment constants that are not in its state
dict (max score, diversity penalty) become per-member tensors. Each member keeps its own env's item
table, click model and penalty, so a mixed-env population trains each member against its own env.

Member k reproduces the solo `SlateQ` with its env and seed:
- acting: relevances come from the population's batched simulator (each user's own env, exactly what
  the solo agent reads from its env), the Q-values from the stacked Q-net; member k draws its
  exploration from its own generator as the solo agent draws from the global RNG: `rand(B)` per
  exploring step, then `randint(N, (B, slate))` only when one of its users explores; `randint(N, (B,
  slate))` per random-phase step. ε follows the shared training step (members move in lockstep).
- update: the solo formula per member. The solo agent evaluates the Q-nets on its kept transitions (a
  click in the paired slate) only; here every transition is evaluated and the squared errors of the
  others are masked out, so member k's loss is its solo loss (a mean over its own kept transitions).

One known difference: a member whose whole batch has no click skips its solo update (no optimizer step,
no Polyak step). In a stack its weights, Adam moments and target net are left as they were, but Adam's
step count is shared with the members that do update, so its later bias corrections count one step more
than the solo run's. With the reference's batch of 20 episodes × 100 steps a click-free batch does not
occur in practice.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

from slatectl.agents.base import ActMode, EpisodeBatch, default_backward
from slatectl.agents.nets import first_click_index
from slatectl.agents.slateq import SlateQ
from slatectl.agents.spec import register_population
from slatectl.agents.stacked import StackedSlatePicker, member_metrics
from slatectl.sim.click_model import relevance
from slatectl.sim.member_envs import MemberEnvs


class StackedSlateQ(StackedSlatePicker):
    nets = ("q", "q_target")
    online_belief = "belief"

    def __init__(self, members: list[SlateQ]):
        super().__init__(members)
        reference = members[0]
        self.num_items, self.slate_size = reference.num_items, reference.slate_size
        # Shared by every env (MixedTopicRec checks): the click model's shape constants.
        self.offset, self.slope = reference.offset, reference.slope
        self.num_topics, self.diversity_threshold = reference.num_topics, reference.diversity_threshold
        self.max_score = torch.tensor([m.max_score for m in members], dtype=torch.float32).view(-1, 1, 1)
        self.diversity_penalty = torch.tensor([m.diversity_penalty for m in members], dtype=torch.float32).view(-1, 1)
        # Host copy of the members' (shared) `step` buffer: ε at every acting step needs no device read.
        self._step = int(self.tensors["step"][0])

    def to(self, device: torch.device | str) -> "StackedSlateQ":
        super().to(device)
        self.max_score = self.max_score.to(self.device)
        self.diversity_penalty = self.diversity_penalty.to(self.device)
        return self

    # -- schedule ----------------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        self.tensors["step"].fill_(int(step))
        self._step = int(step)

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        super().load_member_state_dict(k, state)
        self._step = int(self.tensors["step"][0])

    @property
    def epsilon(self) -> float:
        """SlateQ.epsilon at the shared training step."""
        p = self.params
        return p.epsilon_end + (1.0 - p.epsilon_end) * math.exp(-self._step / p.epsilon_decay)

    # -- acting ------------------------------------------------------------------------------------
    def _pick_slates(self, mode: ActMode, state: Tensor, generators: list[torch.Generator],
                     envs: MemberEnvs | None) -> Tensor:
        K, B = state.shape[:2]
        if envs is None:
            raise ValueError("SlateQ acts on the true relevances: pass the population's environments")
        # The solo agent's privileged read, on the batched simulator: row k·B + b is member k's user b.
        relevances = self.members[0].acting_relevances(envs.env).to(state.device).view(K, B, -1)
        slates = (relevances * self._sequential("q", state)).topk(self.slate_size, dim=-1).indices
        if mode == "explore":
            epsilon = self.epsilon
            for k, g in enumerate(generators):
                explore = torch.rand(B, generator=g, device=g.device) < epsilon
                if bool(explore.any()):  # on the generator's device (the host for CPU generators): no sync
                    random = torch.randint(0, self.num_items, (B, self.slate_size), generator=g, device=g.device)
                    slates[k] = torch.where(explore[:, None].to(state.device), random.to(state.device), slates[k])
        return slates

    # -- training ----------------------------------------------------------------------------------
    def _click_probabilities(self, slate_relevance: Tensor, slate_topics: Tensor) -> Tensor:
        """`click_probabilities` per member (K, M, slate): its own propensities and diversity penalty."""
        K, M, S = slate_topics.shape
        counts = torch.zeros(K * M, self.num_topics, dtype=torch.int64, device=slate_topics.device)
        counts.scatter_add_(1, slate_topics.reshape(K * M, S), torch.ones_like(slate_topics).reshape(K * M, S))
        crowded = (counts.max(dim=1).values >= self.diversity_threshold).view(K, M)
        divisor = torch.where(crowded, self.diversity_penalty, torch.ones_like(self.diversity_penalty))
        return slate_relevance / divisor[..., None] * self.tensors["propensities"][:, None, :]

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        """SlateQ.update of every member on its own batch (fields with a leading K dimension)."""
        p = self.params
        K, E, H = batch.rewards.shape
        n = E * H
        epsilon = self.epsilon
        states = self.encode_episodes("belief", batch.slates, batch.clicks)  # (K, E, H+1, S)
        s = states[:, :, :H].reshape(K, n, -1)
        s_next = states[:, :, 1:].reshape(K, n, -1).detach()
        if p.pair_state_with_shown_clicks:
            slates, clicks = batch.slates[:, :, :H], batch.clicks[:, :, :H]
        else:
            slates, clicks = batch.slates[:, :, 1:], batch.clicks[:, :, 1:]
        rank, kept = first_click_index(clicks.reshape(K, n, -1))  # kept: (K, n) the transitions trained on
        items = slates.reshape(K, n, -1).gather(2, rank[..., None]).squeeze(2)
        not_done = torch.ones(E, H, device=s.device)
        not_done[:, -1] = 0.0
        not_done = not_done.reshape(1, n)
        kept_count = kept.sum(dim=1)  # (K,)
        active = kept_count > 0
        count = kept_count.clamp(min=1).to(s.dtype)

        with torch.no_grad():
            q_next = self._sequential("q_target", s_next)  # (K, n, N)
            users = batch.user_states[:, :, 1:].reshape(K, n, -1)
            env_items = self.tensors["env_items"]
            rel_next = relevance(torch.bmm(users, env_items.transpose(1, 2)) / self.max_score, self.offset, self.slope)
            next_slates = (rel_next * q_next).topk(self.slate_size, dim=2).indices  # A'
            topics = self.tensors["env_item_topics"].gather(1, next_slates.reshape(K, -1)).view_as(next_slates)
            probs = self._click_probabilities(rel_next.gather(2, next_slates), topics)
            next_value = (probs * q_next.gather(2, next_slates)).sum(dim=2)
            target = 1.0 + p.gamma * not_done * next_value  # (K, n)
        q = self._sequential("q", s).gather(2, items[..., None]).squeeze(2)
        squared = torch.where(kept, (q - target).pow(2), torch.zeros_like(q))
        loss = squared.sum(dim=1) / count  # (K,): each member's MSE over its kept transitions
        if bool(active.any()):
            optimizer = self.optimizers["q"]
            optimizer.zero_grad(set_to_none=True)
            backward(loss.sum())
            with self._frozen_members(optimizer, ~active):
                optimizer.step()
        with torch.no_grad():
            self.tensors["step"] += 1
            self._step += 1
            self.tensors["update_count"] += active.to(torch.int64)
            self._polyak(active & (self.tensors["update_count"] % p.target_update_frequency == 0), p.tau)

        q_sum = torch.where(kept, q.detach(), torch.zeros_like(q)).sum(dim=1)
        target_sum = torch.where(kept, target, torch.zeros_like(target)).sum(dim=1)
        # A member without a kept transition reports zeros, as the solo agent: its masked sums are 0 and its
        # count is clamped to 1.
        rows = member_metrics({"kept_transitions": kept_count.to(loss.dtype), "q_loss": loss,
                               "q_mean": q_sum / count, "target_mean": target_sum / count})
        return [{"kept_transitions": row["kept_transitions"], "epsilon": epsilon, **row} for row in rows]

    @contextmanager
    def _frozen_members(self, optimizer: torch.optim.Optimizer, frozen: Tensor) -> Iterator[None]:
        """Undo the optimizer step for the members `frozen` (K,): their weights and Adam moments are put
        back (only the step count, shared by all members, still advances; see the module doc)."""
        if not bool(frozen.any()):
            yield
            return
        params = optimizer.param_groups[0]["params"]
        saved = [{"param": t[frozen].clone(), **{key: v[frozen].clone() for key, v in optimizer.state[t].items()
                                                if key != "step"}} for t in params]
        yield
        with torch.no_grad():
            for t, kept in zip(params, saved):
                t[frozen] = kept.pop("param")
                for key, value in kept.items():
                    optimizer.state[t][key][frozen] = value

    @torch.no_grad()
    def _polyak(self, due: Tensor, tau: float) -> None:
        """q_target ← τ·q + (1 − τ)·q_target for the members `due` (K,) (per element, so per member)."""
        if not bool(due.any()):
            return
        online = [t for name, t in self.tensors.items() if name.startswith("q.")]
        target = [self.tensors[name.replace("q.", "q_target.", 1)] for name in self.tensors if name.startswith("q.")]
        if bool(due.all()):
            torch._foreach_lerp_(target, online, tau)
            return
        for t, o in zip(target, online):
            weight = (due.to(t.dtype) * tau).view(-1, *([1] * (t.dim() - 1)))
            t.lerp_(o, weight)


register_population("slateq", StackedSlateQ)
