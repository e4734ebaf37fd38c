"""SlateQ (Ie et al. 2019), the reference's "QL-TT-TS" variant (notes §7.5). Privileged agent.

Q̄(s, i) per item: s_c (critic GRU belief, 20) → hidden_qnet (256) → ReLU → N (1000), with a Polyak
target copy (τ = 0.002 every `target_update_frequency` updates). The slate value decomposes as
Q(s, A) = Σ_{i∈A} P(i | s, A)·Q̄(s, i); the agent knows the true relevances and click model ("TT"):

- Acting (greedy): the top-K items of ρ_i·Q̄(s, i), sorted, with ρ the true current relevances read
  from the environment (privileged). "explore": with probability ε the whole slate is random (K i.i.d.
  items, duplicates possible, as in the reference), else greedy, per user; ε = ε_end + (1 − ε_end)·
  exp(−step/ε_decay) = 0.01 + 0.99·exp(−step/1000) with step = the training step (episodes completed,
  the reference's global_step). The training loop calls `set_step(step)` (the agent contract) before
  each batch of episodes and each update; `update` also advances the counter by one so that the agent
  keeps a sensible schedule when driven without `set_step`. The step is a buffer (saved with the
  weights), so a resumed run continues the schedule. "random": random slates. "greedy" is used for evaluation.
- Training (first-click assumption), Adam `q_lr` (1e-3) over the Q-net and the critic belief: keep the
  transitions whose clicked slate has a click; j = its first clicked item; target y = 1 + γ(1 − done)·
  Σ_{k∈A'} P(k | s', A')·Q̄'(s', k), where A' = top-K of ρ'·Q̄'(s') with ρ' the relevances recomputed
  from the true next user embedding (`batch.user_states`, no boredom mask) and P(k | s', A') the true
  per-position click probabilities (position bias and diversity penalty); loss MSE(Q̄(s_t, j), y)
  averaged over the kept transitions. s' from the same online GRU, detached; done = 1 on the last
  transition (the reference's common POMDP frame).

Reference quirks — what we do:
(a) Off-by-one pairing: the reference pairs state s_t (which already contains o_t) with the first click
    of o_t, i.e. the click caused by a_{t−1}. **Not reproduced by default**
    (`pair_state_with_shown_clicks: false`: s_t is paired with the clicks of o_{t+1}, the observation
    a_t produced): clearly a bug. `true` reproduces it.
(b) Boredom in the acting relevances: the reference's `get_relevances()` zeroes the wrong slice of the
    user vector for a bored topic b (entries [S·b, (S+1)·b) instead of [S·b, S·b + S)), so boredom is
    mostly ignored. **Not reproduced by default** (`act_relevance: masked`: the simulator's true current
    relevances, bored topics zeroed, `env.relevances()`): clearly a bug. `act_relevance:
    reference-slice` reproduces the slice literally as the notes describe it; `act_relevance: unmasked`
    ignores boredom entirely (matching the training target, which never sees boredom).
(c) The training target uses relevances without a boredom mask (the next boredom state is not stored):
    kept (that is the reference's target, and the next-state boredom is not part of the batch).
(d) Exploration slates drawn with replacement: kept (no measurable effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from slatectl.agents.base import ActMode, Backward, EpisodeBatch, SingleBeliefAgent, default_backward
from slatectl.agents.belief import GRUBelief
from slatectl.agents.nets import (check_params, common_checks, first_click_index, frozen_copy, mlp, polyak_update,
                                  random_slates, read_metrics)
from slatectl.agents.pretrained import AgentInputs
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.sim.click_model import click_probabilities, relevance
from slatectl.sim.topicrec import TopicRec

ACT_RELEVANCES = ("masked", "reference-slice", "unmasked")


@dataclass(frozen=True)
class SlateQParams:
    capacity: int = 10000
    batch_size: int = 20
    gamma: float = 0.8
    tau: float = 0.002
    target_update_frequency: int = 1
    q_lr: float = 0.001
    hidden_qnet: tuple[int, ...] = (256,)
    belief_state_dim: int = 20
    item_embedd_dim: int = 20
    epsilon_end: float = 0.01  # hard-coded in the reference: ε = 0.01 + 0.99·exp(−step/1000)
    epsilon_decay: float = 1000.0
    pair_state_with_shown_clicks: bool = False  # quirk (a): true = reference bug
    act_relevance: str = "masked"  # quirk (b): reference-slice = reference bug

    def validate(self) -> None:
        check_params("agent", common_checks(self) + [
            (0.0 <= self.epsilon_end <= 1.0, f"epsilon_end must lie in [0, 1] (got {self.epsilon_end})"),
            (self.epsilon_decay > 0, f"epsilon_decay must be > 0 (got {self.epsilon_decay})"),
            (self.act_relevance in ACT_RELEVANCES,
             f"act_relevance must be one of {', '.join(ACT_RELEVANCES)} (got {self.act_relevance!r})"),
        ])


class SlateQ(SingleBeliefAgent):
    def __init__(self, params: SlateQParams, env: TopicRec):
        super().__init__()
        cfg = env.config
        self.params = params
        self.num_items, self.slate_size = cfg.num_items, cfg.slate_size
        self.action_dim = 0
        self.belief = GRUBelief(cfg.num_items, params.item_embedd_dim, cfg.slate_size, params.belief_state_dim)
        self.q = mlp(params.belief_state_dim, params.hidden_qnet, cfg.num_items)
        self.q_target = frozen_copy(self.q)
        # The true click model's parameters (privileged), read from the environment for the training target.
        self.register_buffer("env_items", env.item_embeddings.detach().clone().float())
        self.register_buffer("env_item_topics", env.item_topics.detach().clone().long())
        self.register_buffer("propensities", env.propensities.detach().clone().float())
        self.max_score, self.offset, self.slope = env.max_score, cfg.offset, cfg.slope
        self.num_topics, self.topic_size = cfg.num_topics, cfg.topic_size
        self.diversity_threshold, self.diversity_penalty = cfg.diversity_threshold, cfg.diversity_penalty
        # Reference slice bug (quirk b): bored topic b zeroes user entries [S·b, (S+1)·b).
        d = torch.arange(cfg.embedding_dim)
        b = torch.arange(cfg.num_topics)[:, None]
        self.register_buffer("slice_mask", ((d >= cfg.topic_size * b) & (d < (cfg.topic_size + 1) * b)).float())
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("update_count", torch.zeros((), dtype=torch.int64))
        self.optimizer = torch.optim.Adam([*self.q.parameters(), *self.belief.parameters()], lr=params.q_lr)

    # -- schedule -----------------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The training step (episodes completed) that drives ε (kept in the `step` buffer)."""
        super().set_step(step)
        self.step.fill_(int(step))

    @property
    def epsilon(self) -> float:
        p = self.params
        return p.epsilon_end + (1.0 - p.epsilon_end) * math.exp(-int(self.step) / p.epsilon_decay)

    # -- acting -------------------------------------------------------------------------------------
    def acting_relevances(self, env: TopicRec) -> torch.Tensor:
        """(B, N) relevances the agent ranks with (privileged read of the simulator, see quirk b)."""
        mode = self.params.act_relevance
        if mode == "masked":
            rel = env.relevances()
        else:
            user = env.user
            if mode == "reference-slice":
                zeroed = (env.bored.float() @ self.slice_mask.to(user.device)) > 0
                user = user.masked_fill(zeroed, 0.0)
            rel = relevance(env.item_scores(user), env.config.offset, env.config.slope)
        return rel.to(self.env_items.device)

    @torch.no_grad()
    def act(self, env: TopicRec, mode: ActMode) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.belief.state
        B = state.shape[0]
        empty = torch.zeros(B, 0, device=state.device)
        if mode == "random":
            return random_slates(B, self.num_items, self.slate_size, state.device), empty
        if mode not in ("explore", "greedy"):
            raise ValueError(f"unknown act mode {mode!r}")
        slates = (self.acting_relevances(env) * self.q(state)).topk(self.slate_size, dim=1).indices
        if mode == "explore":
            explore = torch.rand(B, device=state.device) < self._acting_epsilon()
            # On the CPU random slates are drawn only when someone explores (the RNG stream every CPU
            # run had); elsewhere always, since asking would wait for the device at every env step.
            if state.device.type != "cpu" or bool(explore.any()):
                slates = torch.where(explore[:, None], random_slates(B, self.num_items, self.slate_size, state.device), slates)
        return slates, empty

    def _acting_epsilon(self) -> float | torch.Tensor:
        """ε for acting: the float of `epsilon` on the CPU; off it the same formula on the device
        (reading the step buffer would wait for the device at every env step)."""
        if self.step.device.type == "cpu":
            return self.epsilon
        p = self.params
        return p.epsilon_end + (1.0 - p.epsilon_end) * torch.exp(-self.step.double() / p.epsilon_decay)

    # -- training -----------------------------------------------------------------------------------
    def click_probabilities(self, slate_relevance: torch.Tensor, slate_topics: torch.Tensor) -> torch.Tensor:
        """The simulator's click model (position bias, diversity penalty) on the agent's device."""
        return click_probabilities(slate_relevance, slate_topics, self.propensities, self.num_topics,
                                   self.diversity_threshold, self.diversity_penalty)

    def next_state_relevances(self, users: torch.Tensor) -> torch.Tensor:
        """(n, D) true user embeddings → (n, N) relevances (no boredom mask)."""
        return relevance(users @ self.env_items.T / self.max_score, self.offset, self.slope)

    def update(self, batch: EpisodeBatch, backward: Backward = default_backward) -> dict[str, float]:
        p = self.params
        E, H = batch.rewards.shape
        n = E * H
        states = self.belief.encode_episodes(batch.slates, batch.clicks)  # (E, H+1, S)
        s = states[:, :H].reshape(n, -1)
        s_next = states[:, 1:].reshape(n, -1).detach()
        if p.pair_state_with_shown_clicks:
            slates, clicks = batch.slates[:, :H], batch.clicks[:, :H]
        else:
            slates, clicks = batch.slates[:, 1:], batch.clicks[:, 1:]
        rank, has_click = first_click_index(clicks.reshape(n, -1))
        items = slates.reshape(n, -1).gather(1, rank[:, None]).squeeze(1)
        not_done = torch.ones(E, H, device=s.device)
        not_done[:, -1] = 0.0
        not_done = not_done.reshape(n)
        kept = has_click.nonzero().squeeze(1)
        metrics = {"kept_transitions": float(kept.numel()), "epsilon": self.epsilon}
        if kept.numel() == 0:
            self.step += 1
            metrics.update(q_loss=0.0, q_mean=0.0, target_mean=0.0)
            return metrics

        with torch.no_grad():
            q_next = self.q_target(s_next[kept])  # (m, N)
            rel_next = self.next_state_relevances(batch.user_states[:, 1:].reshape(n, -1)[kept])
            next_slates = (rel_next * q_next).topk(self.slate_size, dim=1).indices  # A'
            probs = self.click_probabilities(rel_next.gather(1, next_slates), self.env_item_topics[next_slates])
            next_value = (probs * q_next.gather(1, next_slates)).sum(dim=1)
            target = 1.0 + p.gamma * not_done[kept] * next_value
        q = self.q(s[kept]).gather(1, items[kept][:, None]).squeeze(1)
        loss = F.mse_loss(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        backward(loss)
        self.optimizer.step()
        self.step += 1
        self.update_count += 1
        if p.target_update_frequency == 1 or int(self.update_count) % p.target_update_frequency == 0:
            polyak_update(self.q_target, self.q, p.tau)
        metrics.update(q_loss=loss.detach(), q_mean=q.detach().mean(), target_mean=target.mean())
        return read_metrics(metrics)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q": self.optimizer}


def build_slateq(params: SlateQParams, env: TopicRec, inputs: AgentInputs) -> SlateQ:
    return SlateQ(params, env)


register_agent(AgentSpec("slateq", "SlateQ", SlateQParams, build_slateq, privileged=True))
