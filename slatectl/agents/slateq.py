"""SlateQ (Ie et al. 2019), the reference's "QL-TT-TS" variant (notes §7.5). Privileged agent.

Q̄(s, i) per item: s_c (critic GRU belief, 20) → hidden_qnet (256) → ReLU → N (1000), with a Polyak
target copy (τ = 0.002 every `target_update_frequency` updates). The slate value decomposes as
Q(s, A) = Σ_{i∈A} P(i | s, A)·Q̄(s, i); the agent knows the true relevances and click model ("TT"):

- Acting: "greedy" (evaluation) = the top-K items of ρ_i·Q̄(s, i), sorted, ρ the true current relevances
  read from the environment; "explore" = per user, with probability ε a whole random slate (K i.i.d.
  items), else greedy; "random" = random slates. ε = ε_end + (1 − ε_end)·exp(−step/ε_decay) = 0.01 +
  0.99·exp(−step/1000), step = the training step (episodes completed, the reference's global_step), set
  by the trainer (`set_step`) before each batch of episodes and each update; `update` also advances it,
  so the schedule stays sensible without `set_step`. It is a buffer: a resumed run continues it.
- Training (first-click assumption), Adam `q_lr` (1e-3) over the Q-net and the critic belief: on the
  transitions whose clicked slate has a click, j = its first clicked item, target y = 1 + γ(1 − done)·
  Σ_{k∈A'} P(k | s', A')·Q̄'(s', k), A' = top-K of ρ'·Q̄'(s') with ρ' the relevances of the true next user
  embedding (`batch.user_states`, no boredom mask) and P(k | s', A') the true per-position click
  probabilities (position bias, diversity penalty); loss MSE(Q̄(s_t, j), y) over those transitions. s'
  from the same online GRU, detached; done = 1 on the last transition (the reference's POMDP frame).

Reference quirks — what we do:
(a) The reference pairs s_t (which already contains o_t) with the first click of o_t, caused by a_{t−1}:
    clearly a bug, **not reproduced by default** (`pair_state_with_shown_clicks: false` pairs s_t with
    the clicks of o_{t+1}, which a_t produced); `true` reproduces it.
(b) For a bored topic b the reference's `get_relevances()` zeroes the wrong slice of the user vector
    ([S·b, (S+1)·b) instead of [S·b, S·b + S)), so boredom is mostly ignored when acting: clearly a bug,
    **not reproduced by default** (`act_relevance: masked`: the simulator's relevances with bored topics
    zeroed); `reference-slice` reproduces the slice as the notes describe it; `unmasked` ignores boredom
    (as the training target does).
(c) The target's relevances have no boredom mask (the next boredom state is not in the batch): kept.
(d) Exploration slates drawn with replacement: kept (no measurable effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, default_backward
from slatectl.agents.belief import GRUBelief
from slatectl.agents.nets import common_checks, frozen_copy, mlp, one_of
from slatectl.agents.pretrained import AgentInputs
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.agents.stacked import StackedSlatePicker, member_metrics
from slatectl.config_tools import check_params
from slatectl.sim.click_model import click_probabilities, relevance
from slatectl.sim.member_envs import MemberEnvs
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
            (0.0 <= self.epsilon_end <= 1.0, f"agent.epsilon_end must lie in [0, 1] (got {self.epsilon_end})"),
            (self.epsilon_decay > 0, f"agent.epsilon_decay must be > 0 (got {self.epsilon_decay})"),
            one_of(self, "act_relevance", ACT_RELEVANCES),
        ])


class SlateQ(Agent):
    """A member's layout (see `Agent`); `inputs` is unused (the `AgentSpec.build` signature)."""

    def __init__(self, params: SlateQParams, env: TopicRec, inputs: AgentInputs | None = None):
        super().__init__()
        cfg = self.env_config = env.config
        self.params = params
        self.belief = GRUBelief(cfg.num_items, params.item_embedd_dim, cfg.slate_size, params.belief_state_dim)
        self.q = mlp(params.belief_state_dim, params.hidden_qnet, cfg.num_items)
        self.q_target = frozen_copy(self.q)
        # The true click model's parameters (privileged), read from the environment for the training target.
        self.register_buffer("env_items", env.item_embeddings.detach().clone().float())
        self.register_buffer("env_item_topics", env.item_topics.detach().clone().long())
        self.register_buffer("propensities", env.propensities.detach().clone().float())
        self.max_score = env.max_score
        # Reference slice bug (quirk b): bored topic b zeroes user entries [S·b, (S+1)·b).
        d = torch.arange(cfg.embedding_dim)
        b = torch.arange(cfg.num_topics)[:, None]
        self.register_buffer("slice_mask", ((d >= cfg.topic_size * b) & (d < (cfg.topic_size + 1) * b)).float())
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("update_count", torch.zeros((), dtype=torch.int64))
        self._optimizers = {"q": torch.optim.Adam([*self.q.parameters(), *self.belief.parameters()], lr=params.q_lr)}


class StackedSlateQ(StackedSlatePicker):
    """K SlateQ members stacked: acting, the ε schedule and the update (the module doc; its stacked state, per-member
    envs and draws, a member with a click-free batch: docs/population.md, "SlateQ", "Known difference")."""

    nets = ("q", "q_target")

    def __init__(self, members: list[SlateQ]):
        super().__init__(members)
        # The click model's shape constants are shared by every env (MixedTopicRec checks); the penalty is not.
        self.env_config = cfg = members[0].env_config
        self.num_items, self.slate_size = cfg.num_items, cfg.slate_size
        self.diversity_penalties = [m.env_config.diversity_penalty for m in members]
        self.max_score = torch.tensor([m.max_score for m in members], dtype=torch.float32).view(-1, 1, 1)
        # Host copy of the members' (shared) `step` buffer: ε at every acting step needs no device read.
        self._step = int(self.tensors["step"][0])

    def to(self, device: torch.device | str) -> "StackedSlateQ":
        super().to(device)
        self.max_score = self.max_score.to(self.device)
        return self

    def set_step(self, step: int) -> None:
        self.tensors["step"].fill_(int(step))
        self._step = int(step)

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        super().load_member_state_dict(k, state)
        self._step = int(self.tensors["step"][0])

    @property
    def epsilon(self) -> float:
        p = self.params
        return p.epsilon_end + (1.0 - p.epsilon_end) * math.exp(-self._step / p.epsilon_decay)

    def acting_relevances(self, env: TopicRec) -> Tensor:
        """(rows, N) relevances the members rank with: a privileged read of the (batched) simulator `env`,
        quirk (b) choosing how boredom enters."""
        mode = self.params.act_relevance
        if mode == "masked":
            return env.relevances()
        user = env.user
        if mode == "reference-slice":
            zeroed = (env.bored.float() @ self.tensors["slice_mask"][0].to(user.device)) > 0
            user = user.masked_fill(zeroed, 0.0)
        return relevance(env.item_scores(user), env.config.offset, env.config.slope)

    def _pick_slates(self, mode: ActMode, state: Tensor, generators: list[torch.Generator],
                     envs: MemberEnvs | None) -> Tensor:
        K, B = state.shape[:2]
        if envs is None:
            raise ValueError("SlateQ acts on the true relevances: pass the population's environments")
        # Row k·B + b of the batched simulator is member k's user b.
        relevances = self.acting_relevances(envs.env).to(state.device).view(K, B, -1)
        slates = (relevances * self._sequential("q", state)).topk(self.slate_size, dim=-1).indices
        if mode == "explore":
            epsilon = self.epsilon
            for k, g in enumerate(generators):
                explore = torch.rand(B, generator=g, device=g.device) < epsilon
                if bool(explore.any()):  # on the generator's device (the host for CPU generators): no sync
                    random = torch.randint(0, self.num_items, (B, self.slate_size), generator=g, device=g.device)
                    slates[k] = torch.where(explore[:, None].to(state.device), random.to(state.device), slates[k])
        return slates

    def next_value(self, s_next: Tensor, users: Tensor) -> Tensor:
        """(K, n) Σ_{k∈A'} P(k | s', A')·Q̄'(s', k) from next beliefs (K, n, S) and true next user
        embeddings (K, n, D): A' = top-K of ρ'·Q̄'(s'), ρ' without a boredom mask (quirk c), P the
        simulator's click model with each member's own env (`slatectl.sim.click_model`)."""
        q_next = self._sequential("q_target", s_next)  # (K, n, N)
        scores = torch.bmm(users, self.tensors["env_items"].transpose(1, 2)) / self.max_score
        rel_next = relevance(scores, self.env_config.offset, self.env_config.slope)
        next_slates = (rel_next * q_next).topk(self.slate_size, dim=2).indices  # A'
        topics = self.tensors["env_item_topics"].gather(1, next_slates.flatten(1)).view_as(next_slates)
        slate_relevance = rel_next.gather(2, next_slates)
        probs = torch.stack([
            click_probabilities(slate_relevance[k], topics[k], self.tensors["propensities"][k],
                                self.env_config.num_topics, self.env_config.diversity_threshold, penalty)
            for k, penalty in enumerate(self.diversity_penalties)])
        return (probs * q_next.gather(2, next_slates)).sum(dim=2)

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        p = self.params
        K, E, H = batch.rewards.shape
        n = E * H
        epsilon = self.epsilon
        states = self.encode_episodes("belief", batch.slates, batch.clicks)  # (K, E, H+1, S)
        items, kept = batch.first_clicks(p.pair_state_with_shown_clicks)  # quirk (a)
        items, kept = items.reshape(K, n), kept.reshape(K, n)  # kept: the transitions trained on
        kept_count = kept.sum(dim=1)  # (K,)
        count = kept_count.clamp(min=1).to(states.dtype)
        with torch.no_grad():
            next_value = self.next_value(states[:, :, 1:].reshape(K, n, -1).detach(),
                                         batch.user_states[:, :, 1:].reshape(K, n, -1))
            target = 1.0 + p.gamma * batch.not_done() * next_value  # (K, n)
        q = self._sequential("q", states[:, :, :H].reshape(K, n, -1)).gather(2, items[..., None]).squeeze(2)
        squared = torch.where(kept, (q - target).pow(2), torch.zeros_like(q))
        loss = squared.sum(dim=1) / count  # (K,): each member's MSE over its kept transitions
        self._step_members(loss, kept_count > 0, backward)
        q_sum = torch.where(kept, q.detach(), torch.zeros_like(q)).sum(dim=1)
        target_sum = torch.where(kept, target, torch.zeros_like(target)).sum(dim=1)
        # A member without a kept transition reports zeros: its masked sums are 0 and its count is clamped to 1.
        rows = member_metrics({"kept_transitions": kept_count.to(loss.dtype), "q_loss": loss,
                               "q_mean": q_sum / count, "target_mean": target_sum / count})
        return [{"kept_transitions": row["kept_transitions"], "epsilon": epsilon, **row} for row in rows]

    def _step_members(self, loss: Tensor, active: Tensor, backward) -> None:
        """Adam and Polyak steps of the members `active` (K,) on their losses (K,): the others' weights and
        Adam moments are put back after the shared Adam step (its step count still advances: docs/population.md).
        Every member's schedule step advances."""
        if bool(active.any()):
            optimizer, frozen = self.optimizers["q"], ~active
            saved = [] if bool(active.all()) else [
                (t, {key: v[frozen].clone() for key, v in [("param", t), *optimizer.state[t].items()] if key != "step"})
                for t in optimizer.param_groups[0]["params"]]
            self._optimizer_step("q", loss, backward)
            with torch.no_grad():
                for t, values in saved:
                    for key, value in values.items():
                        (t if key == "param" else optimizer.state[t][key])[frozen] = value
        with torch.no_grad():
            self.tensors["step"] += 1
            self._step += 1
            self.tensors["update_count"] += active.to(torch.int64)
            self._polyak("q", self.params.tau,
                         active & (self.tensors["update_count"] % self.params.target_update_frequency == 0))


register_agent(AgentSpec("slateq", "SlateQ", SlateQParams, SlateQ, privileged=True, population=StackedSlateQ))
