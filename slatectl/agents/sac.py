"""SAC with GRU beliefs and a frozen ranker: SAC+GeMS, SAC+TopK (ideal), SAC+TopK (MF) (notes §7.1–7.3).

The agent acts in a continuous action space (a GeMS latent z, or a TopK query vector) and a frozen
ranker turns the action into a slate. What one `update` does, on a batch of E whole episodes
(E·H transitions, H = 100):

1. Re-encode the episodes with the actor's and the critic's GRU beliefs (each has its own item table),
   from a zero hidden state: s_t = belief after o_0 … o_t, t = 0 … H. Transition t is
   (s_t, a_t, r_t, s_{t+1}); next states come from the same online GRU, detached (no target encoder);
   done = 1 on the last transition (t = H − 1), 0 elsewhere.
2. Critic (Adam, `q_lr`, over Q1 + Q2 + critic belief): y = r + γ(1 − done)[min(Q1', Q2')(s'_c, a')
   − α log π(a'|s'_a)], a' ~ π(·|s'_a); loss ½(MSE(Q1(s_c, a), y) + MSE(Q2(s_c, a), y)).
3. Actor (Adam, `pi_lr`, over the policy MLP + actor belief): a ~ π(·|s_a) reparameterised;
   loss mean(α log π(a|s_a) − min(Q1, Q2)(s_c.detach(), a)).
4. Temperature (auto_entropy, Adam `alpha_lr` on log α, init 0): loss −mean(exp(log α)·(log π + H̄)
   .detach()) with H̄ = −a_dim; α becomes exp(log α). The configured `alpha` (0.2) is the α of the
   first update only (then α ≈ 1 and adapts), exactly as in the reference.
5. Polyak: Q' ← τQ + (1 − τ)Q' every `target_update_frequency` (1) updates, τ = 0.002.

Policy: s_a → hidden_pinet (256) → ReLU → (mean, log std) with log std clamped to [−20, 2];
u ~ 𝒩(mean, std), action = center + scale·tanh(u); log π = Σ[log 𝒩(u) − log(1 − tanh²u + 1e-6)]
(the reference omits the −Σ log scale Jacobian term; kept). Critics [s_c, a] → hidden_qnet (256) →
ReLU → 1. Acting modes: "random" = center + scale·(U(0, 1) − 0.5) (the middle half of the box, as the
reference's random phase), "explore" = sampled action, "greedy" = center + scale·tanh(mean).
Only the actor's belief runs online (the critic's is only used in updates).

The box (center, scale): GeMS → the aggregated-posterior bounds computed at pretraining (passed in as
`inputs.gems_bounds`); TopK → per-dimension min/max of the ranker's item table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

from slatectl.agents.base import ActMode, Agent, Backward, EpisodeBatch, default_backward
from slatectl.agents.belief import GRUBelief
from slatectl.agents.nets import check_params, common_checks, frozen_copy, mlp, polyak_update, read_metrics
from slatectl.agents.pretrained import AgentInputs, checked_item_table, require_input
from slatectl.agents.rankers import GeMSRanker, Ranker, TopKRanker
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.errors import BadInput
from slatectl.sim.topicrec import Observation, TopicRec

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class SACParams:
    """Hyper-parameters of the SAC agents (reference keys in configs/agents/sac-*.yaml)."""

    capacity: int = 10000  # replay capacity in episodes
    batch_size: int = 20  # episodes per update
    gamma: float = 0.8
    tau: float = 0.002
    target_update_frequency: int = 1  # Polyak every N updates
    q_lr: float = 0.001
    pi_lr: float = 0.003
    alpha: float = 0.2  # entropy weight of the first update (fixed weight if auto_entropy is off)
    alpha_lr: float = 0.001
    auto_entropy: bool = True
    hidden_qnet: tuple[int, ...] = (256,)
    hidden_pinet: tuple[int, ...] = (256,)
    belief_state_dim: int = 20
    item_embedd_dim: int = 20  # belief item tables

    def validate(self) -> None:
        check_params("agent", common_checks(self) + [(self.alpha >= 0, f"alpha must be >= 0 (got {self.alpha})")])


class SACAgent(Agent):
    """SAC over a continuous action box; subclasses choose how actions become slates (`_rank`)."""

    def __init__(self, params: SACParams, num_items: int, slate_size: int, action_center: torch.Tensor,
                 action_scale: torch.Tensor, critic_action_dim: int | None = None, ranker: Ranker | None = None):
        super().__init__()
        center = torch.as_tensor(action_center, dtype=torch.float32).detach().clone().reshape(-1)
        scale = torch.as_tensor(action_scale, dtype=torch.float32).detach().clone().reshape(-1)
        if center.shape != scale.shape:
            raise BadInput(f"action bounds disagree: center has {center.numel()} dims, scale {scale.numel()}.")
        if not bool(torch.isfinite(center).all() and torch.isfinite(scale).all()) or bool((scale < 0).any()):
            raise BadInput("action bounds must be finite with a non-negative scale.")
        self.params = params
        self.num_items, self.slate_size = num_items, slate_size
        self.action_dim = center.numel()
        self.ranker = ranker
        self.register_buffer("action_center", center)
        self.register_buffer("action_scale", scale)
        a_dim, s_dim = self.action_dim, params.belief_state_dim
        q_in = s_dim + (critic_action_dim if critic_action_dim is not None else a_dim)

        self.actor_belief = GRUBelief(num_items, params.item_embedd_dim, slate_size, s_dim)
        self.critic_belief = GRUBelief(num_items, params.item_embedd_dim, slate_size, s_dim)
        self.actor = mlp(s_dim, params.hidden_pinet, 2 * a_dim)
        self.q1 = mlp(q_in, params.hidden_qnet, 1)
        self.q2 = mlp(q_in, params.hidden_qnet, 1)
        self.q1_target = frozen_copy(self.q1)
        self.q2_target = frozen_copy(self.q2)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        self.target_entropy = -float(a_dim)
        # The α used by the next update: the configured value first, then exp(log α) (reference behaviour).
        self.register_buffer("alpha", torch.tensor(float(params.alpha)))
        self.register_buffer("update_count", torch.zeros((), dtype=torch.int64))
        #: Whether the critic belief also runs online (WkNN scores candidates with the critic).
        self.online_critic_belief = False

        self.critic_optimizer = torch.optim.Adam(
            [*self.q1.parameters(), *self.q2.parameters(), *self.critic_belief.parameters()], lr=params.q_lr)
        self.actor_optimizer = torch.optim.Adam(
            [*self.actor.parameters(), *self.actor_belief.parameters()], lr=params.pi_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=params.alpha_lr)

    # -- policy -------------------------------------------------------------------------------------
    def _policy_head(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(states).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample_action(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised a ~ π(·|s) and log π(a|s) (tanh correction, no scale Jacobian)."""
        mean, log_std = self._policy_head(states)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        squashed = torch.tanh(u)
        log_prob = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        log_prob = log_prob - torch.log(1 - squashed.pow(2) + 1e-6).sum(-1)
        return self.action_center + self.action_scale * squashed, log_prob

    def greedy_action(self, states: torch.Tensor) -> torch.Tensor:
        mean, _ = self._policy_head(states)
        return self.action_center + self.action_scale * torch.tanh(mean)

    def random_action(self, batch: int) -> torch.Tensor:
        """Uniform on the middle half of the box: center + scale·(U(0, 1) − 0.5)."""
        u = torch.rand(batch, self.action_dim, device=self.action_center.device)
        return self.action_center + self.action_scale * (u - 0.5)

    def critic_value(self, states: torch.Tensor, actions: torch.Tensor, target: bool = False) -> torch.Tensor:
        x = torch.cat([states, actions], dim=-1)
        q1, q2 = (self.q1_target, self.q2_target) if target else (self.q1, self.q2)
        return torch.minimum(q1(x), q2(x)).squeeze(-1)

    # -- acting -------------------------------------------------------------------------------------
    @torch.no_grad()
    def begin_episodes(self, first: Observation, user_ids: torch.Tensor | None = None, seed: int | None = None) -> None:
        self.actor_belief.reset(first)
        if self.online_critic_belief:
            self.critic_belief.reset(first)

    def belief_state(self) -> torch.Tensor:
        return self.actor_belief.state

    @torch.no_grad()
    def observe(self, observation: Observation) -> None:
        self.actor_belief.step(observation)
        if self.online_critic_belief:
            self.critic_belief.step(observation)

    @torch.no_grad()
    def act(self, env: TopicRec, mode: ActMode) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.actor_belief.state
        if mode == "random":
            action = self.random_action(state.shape[0])
        elif mode == "explore":
            action, _ = self.sample_action(state)
        elif mode == "greedy":
            action = self.greedy_action(state)
        else:
            raise ValueError(f"unknown act mode {mode!r}")
        return self._rank(action), action

    def _rank(self, actions: torch.Tensor) -> torch.Tensor:
        assert self.ranker is not None
        return self.ranker.rank(actions)

    # -- training -----------------------------------------------------------------------------------
    def critic_actions(self, batch: EpisodeBatch) -> torch.Tensor:
        """(E, H, ·) the action input of the critic for the stored transitions."""
        return batch.actions

    def update(self, batch: EpisodeBatch, backward: Backward = default_backward) -> dict[str, float]:
        p = self.params
        E, H = batch.rewards.shape
        n = E * H
        actor_states = self.actor_belief.encode_episodes(batch.slates, batch.clicks)  # (E, H+1, S)
        critic_states = self.critic_belief.encode_episodes(batch.slates, batch.clicks)
        s_a = actor_states[:, :H].reshape(n, -1)
        s_a_next = actor_states[:, 1:].reshape(n, -1).detach()
        s_c = critic_states[:, :H].reshape(n, -1)
        s_c_next = critic_states[:, 1:].reshape(n, -1).detach()
        actions = self.critic_actions(batch).reshape(n, -1)
        rewards = batch.rewards.reshape(n)
        not_done = torch.ones(E, H, device=rewards.device)
        not_done[:, -1] = 0.0
        not_done = not_done.reshape(n)
        alpha = self.alpha.detach().clone()

        # 1. critic
        with torch.no_grad():
            next_actions, next_log_prob = self.sample_action(s_a_next)
            next_q = self.critic_value(s_c_next, next_actions, target=True) - alpha * next_log_prob
            target = rewards + p.gamma * not_done * next_q
        x = torch.cat([s_c, actions], dim=-1)
        q1, q2 = self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
        critic_loss = 0.5 * (F.mse_loss(q1, target) + F.mse_loss(q2, target))
        self.critic_optimizer.zero_grad(set_to_none=True)
        backward(critic_loss)
        self.critic_optimizer.step()

        # 2. actor (critic states detached: the actor loss does not train the critic belief; the
        #    critics' weights are excluded from this backward pass, which only needs dQ/da)
        critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        for param in critic_params:
            param.requires_grad_(False)
        try:
            new_actions, log_prob = self.sample_action(s_a)
            actor_loss = (alpha * log_prob - self.critic_value(s_c.detach(), new_actions)).mean()
            self.actor_optimizer.zero_grad(set_to_none=True)
            backward(actor_loss)
        finally:
            for param in critic_params:
                param.requires_grad_(True)
        self.actor_optimizer.step()

        # 3. temperature
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
                   "q_mean": q1.detach().mean(), "log_pi": log_prob.detach().mean()}
        if p.auto_entropy:
            alpha_loss = -(self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()
            self.alpha_optimizer.zero_grad(set_to_none=True)
            backward(alpha_loss)
            self.alpha_optimizer.step()
            self.alpha.copy_(self.log_alpha.detach().exp())
            metrics["alpha_loss"] = alpha_loss.detach()

        # 4. targets (the count is read only when the period is not 1: each read waits for a GPU)
        self.update_count += 1
        if p.target_update_frequency == 1 or int(self.update_count) % p.target_update_frequency == 0:
            polyak_update(self.q1_target, self.q1, p.tau)
            polyak_update(self.q2_target, self.q2, p.tau)
        return read_metrics(metrics)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named = {"critic": self.critic_optimizer, "actor": self.actor_optimizer}
        if self.params.auto_entropy:
            named["alpha"] = self.alpha_optimizer
        return named


# -- builders -----------------------------------------------------------------------------------------

def build_sac_gems(params: SACParams, env: TopicRec, inputs: AgentInputs) -> SACAgent:
    gems = require_input(inputs, "gems", "sac-gems")
    center, scale = require_input(inputs, "gems_bounds", "sac-gems")
    cfg = env.config
    if int(gems.num_items) != cfg.num_items or int(gems.slate_size) != cfg.slate_size:
        raise BadInput(f"the GeMS model is for {gems.num_items} items × {gems.slate_size} slots; "
                       f"the environment has {cfg.num_items} × {cfg.slate_size}.")
    ranker = GeMSRanker(gems)
    if torch.as_tensor(center).numel() != ranker.action_dim:
        raise BadInput(f"GeMS bounds have {torch.as_tensor(center).numel()} dims; the latent space has {ranker.action_dim}.")
    return SACAgent(params, cfg.num_items, cfg.slate_size, center, scale, ranker=ranker)


def build_sac_topk(params: SACParams, env: TopicRec, table: torch.Tensor) -> SACAgent:
    """SAC+TopK ranking with the (N, D) item table `table`."""
    ranker = TopKRanker(table, env.config.slate_size)
    center, scale = ranker.action_bounds()
    return SACAgent(params, env.config.num_items, env.config.slate_size, center, scale, ranker=ranker)


def build_sac_topk_ideal(params: SACParams, env: TopicRec, inputs: AgentInputs) -> SACAgent:
    """Privileged: ranks with the environment's own item table."""
    return build_sac_topk(params, env, checked_item_table(env.item_embeddings, env, "the environment's item table"))


def build_sac_topk_mf(params: SACParams, env: TopicRec, inputs: AgentInputs) -> SACAgent:
    table = checked_item_table(require_input(inputs, "mf", "sac-topk-mf"), env, "the MF item table")
    return build_sac_topk(params, env, table)


register_agent(AgentSpec("sac-gems", "SAC+GeMS", SACParams, build_sac_gems, needs=("gems",)))
register_agent(AgentSpec("sac-topk-ideal", "SAC+TopK (ideal)", SACParams, build_sac_topk_ideal, privileged=True))
register_agent(AgentSpec("sac-topk-mf", "SAC+TopK (MF)", SACParams, build_sac_topk_mf, needs=("mf",)))
