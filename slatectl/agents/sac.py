"""SAC with GRU beliefs and a frozen ranker: SAC+GeMS, SAC+TopK (ideal), SAC+TopK (MF) (notes §7.1–7.3,
docs/algorithms.md §4–5). The agent acts in a continuous space (a GeMS latent, or a TopK query vector) and a
frozen ranker turns the action into a slate. One update, on E whole episodes (E·H transitions, H = 100):

1. Re-encode the episodes with the actor's and the critic's GRU beliefs (each its own item table) from a
   zero state: s_t = belief after o_0 … o_t; s_{t+1} from the same online GRU, detached (no target
   encoder); done = 1 on the last transition (t = H − 1), 0 elsewhere.
2. Critic (Adam `q_lr` over Q1, Q2, critic belief): y = r + γ(1 − done)[min(Q1', Q2')(s'_c, a')
   − α log π(a'|s'_a)], a' ~ π(·|s'_a); loss ½(MSE(Q1(s_c, a), y) + MSE(Q2(s_c, a), y)).
3. Actor (Adam `pi_lr` over the policy MLP, actor belief): a ~ π(·|s_a) reparameterised;
   loss mean(α log π(a|s_a) − min(Q1, Q2)(s_c.detach(), a)).
4. Temperature (auto_entropy, Adam `alpha_lr` on log α, init 0): loss −mean(exp(log α)·(log π + H̄)
   .detach()), H̄ = −a_dim; then α = exp(log α). The configured `alpha` (0.2) is the α of the first
   update only (then α ≈ 1 and adapts), exactly as in the reference.
5. Polyak: Q' ← τQ + (1 − τ)Q' every `target_update_frequency` updates.

Policy: (mean, log std clamped to [−20, 2]) = MLP(s_a); u ~ 𝒩(mean, std), action = center + scale·tanh(u);
log π = Σ[log 𝒩(u) − log(1 − tanh²u + 1e-6)] (the reference omits the −Σ log scale term; kept). Critics:
MLP([s_c, a]) → 1. Acting: "random" = center + scale·(U(0, 1) − 0.5) (the middle half of the box, as the
reference's random phase), "explore" = sampled, "greedy" = center + scale·tanh(mean); only the actor's
belief runs online. The box (center, scale): GeMS → the aggregated-posterior bounds computed at pretraining
(`inputs.gems_bounds`); TopK → per-dimension min/max of the ranker's item table.

Stacked (docs/population.md, "Stacked SAC"): temperature, targets and boxes are per member, nothing couples
members' parameters (no gradient clipping), and member k draws from its own generator in a fixed order and
shape (randperm of the replay, next-state noise, current-state noise; one (B, A) draw per acting step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, default_backward
from slatectl.agents.belief import GRUBelief
from slatectl.agents.critic_pair import block_diagonal, input_layer, output_layer
from slatectl.agents.nets import common_checks, frozen_copy, mlp
from slatectl.agents.pretrained import AgentInputs, checked_item_table, require_input
from slatectl.agents.rankers import GeMSRanker, Ranker, TopKRanker, first_argmax_of_products, item_table_box
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.agents.stacked import StackedAgent, member_metrics
from slatectl.config_tools import check_params
from slatectl.errors import BadInput
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: Largest activation block of one training kernel on a CPU (`StackedSAC._chunked`).
_CPU_BLOCK_BYTES = 8 << 20
#: Rows of slot queries scored against the item table at once when ranking (keeps the block in cache).
_RANK_CHUNK_ROWS = 2048


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
        check_params("agent", common_checks(self) + [(self.alpha >= 0, f"agent.alpha must be >= 0 (got {self.alpha})")])


class SACAgent(Agent):
    """One SAC run's layout (`slatectl.agents.base.Agent`); `ranker` (GeMS or TopK) turns an action into a slate."""

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
        self._optimizers = {
            "critic": torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters(),
                                        *self.critic_belief.parameters()], lr=params.q_lr),
            "actor": torch.optim.Adam([*self.actor.parameters(), *self.actor_belief.parameters()], lr=params.pi_lr)}
        if params.auto_entropy:
            self._optimizers["alpha"] = torch.optim.Adam([self.log_alpha], lr=params.alpha_lr)


class StackedSAC(StackedAgent):
    """K ≥ 1 SAC runs (`SACAgent` layouts of one architecture), all with GeMS or all with TopK rankers."""

    online_belief = "actor_belief"
    nets = ("actor", "q1", "q2", "q1_target", "q2_target", "ranker.gems.decoder")
    #: The member layout class this stacks, and the rankers its `act` knows.
    layout: type[SACAgent] = SACAgent
    rankers: tuple[type, ...] = (GeMSRanker, TopKRanker)

    def __init__(self, members: list[SACAgent]):
        super().__init__(members)
        reference = members[0]
        self.ranker_kind = type(reference.ranker)
        self.target_entropy = reference.target_entropy
        if self.ranker_kind is GeMSRanker:
            self.item_dim = int(reference.ranker.gems.item_dim)
        self.slate_size = int(reference.slate_size)
        # Host copy of the members' (shared) update count: deciding a Polyak step needs no device sync.
        self._update_count = int(self.tensors["update_count"][0])

    def _check_members(self, members: list[SACAgent]) -> None:
        """Layouts of class `layout` with one of `rankers`, equal hyper-parameters, one ranker kind and action
        and item dimensions (a GeMS latent size is not a hyper-parameter of the agent)."""
        if any(type(m) is not self.layout or type(m.ranker) not in self.rankers for m in members):
            raise TypeError(f"{type(self).__name__} stacks {self.layout.__name__} layouts ranking with "
                            + " or ".join(r.__name__ for r in self.rankers))
        super()._check_members(members)
        shapes = {(type(m.ranker), m.action_dim, getattr(m, "item_dim", None)) for m in members}
        if len(shapes) > 1:
            raise ValueError("population members must share the ranker kind and the action and item dimensions")

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        super().load_member_state_dict(k, state)
        self._update_count = int(self.tensors["update_count"][0])

    def _q_pair(self, nets: tuple[str, str], states: Tensor, actions: Tensor, members: slice = slice(None)) -> Tensor:
        """(Q_a, Q_b)(s, a) of two critic MLPs of one shape in one pass, one matmul per layer for both (critic_pair.py):
        (K, M, 2), member k's column j `nets[j]` alone up to summation order (zero blocks add exact zeros)."""
        a, b = nets
        depth = len(self._layers[a])
        for i in range(0, depth, 2):
            wa, wb = self.tensors[f"{a}.{i}.weight"][members], self.tensors[f"{b}.{i}.weight"][members]  # (k, out, in)
            ba, bb = self.tensors[f"{a}.{i}.bias"][members], self.tensors[f"{b}.{i}.bias"][members]
            if i == 0:  # side by side, the bias folded in as a last weight column
                w = torch.cat([torch.cat([wa, ba.unsqueeze(-1)], dim=-1),
                               torch.cat([wb, bb.unsqueeze(-1)], dim=-1)], dim=1)  # (K, 2·out, in + 1)
                x = input_layer(states, actions, w)
            elif wa.shape[1] == 1:  # the output layers, one value per net
                x = output_layer(x, torch.cat([wa, wb], dim=1), torch.cat([ba, bb], dim=-1))
            else:
                x = torch.baddbmm(torch.cat([ba, bb], dim=-1).unsqueeze(1), x, block_diagonal(wa, wb))
            if i + 1 < depth:
                x = x.relu_()
        return x

    def _chunked(self, fn: Callable[..., Tensor], width: int, *xs: Tensor) -> Tensor:
        """fn(members, *x[members]) over slices of the members whose (members, rows, width) float32 activations
        stay within `_CPU_BLOCK_BYTES` on a CPU, concatenated: (K, M, ·); all members at once elsewhere. These
        passes over (K, 2,000, 256…512) activations are memory-bound on a CPU, where cache-sized blocks are
        faster (BENCHMARKS.md, "Kernel notes: stacked agents and SAC"); same values up to rounding (tested)."""
        per_chunk = max(1, _CPU_BLOCK_BYTES // max(1, xs[0].shape[1] * width * 4))
        if self.device.type != "cpu" or per_chunk >= self.K:
            return fn(slice(None), *xs)
        chunks = [slice(start, start + per_chunk) for start in range(0, self.K, per_chunk)]
        return torch.cat([fn(m, *(x[m] for x in xs)) for m in chunks], dim=0)

    def _q_values(self, nets: tuple[str, str], states: Tensor, actions: Tensor) -> Tensor:
        return self._chunked(lambda m, s, a: self._q_pair(nets, s, a, m), 2 * max(self.params.hidden_qnet),
                             states, actions)

    def _policy_head(self, states: Tensor, fold_bias: bool = False) -> tuple[Tensor, Tensor]:
        if fold_bias:  # many rows: the training pass, in member chunks
            width = max(self.params.hidden_pinet)
            out = self._chunked(lambda m, x: self._sequential("actor", x, True, m), width, states)
        else:
            out = self._sequential("actor", states)
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _box(self) -> tuple[Tensor, Tensor]:
        return self.tensors["action_center"].unsqueeze(1), self.tensors["action_scale"].unsqueeze(1)

    def squash(self, mean: Tensor, log_std: Tensor, noise: Tensor,
               with_log_prob: bool = True) -> tuple[Tensor, Tensor | None]:
        """Reparameterised a ~ π(·|s) and log π(a|s) from the policy head's (K, M, A) mean and log std and
        the members' (K, M, A) noise (log π None without `with_log_prob`: acting does not use it)."""
        squashed = torch.tanh(mean + log_std.exp() * noise)
        center, scale = self._box()
        if not with_log_prob:
            return center + scale * squashed, None
        log_prob = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        log_prob = log_prob - torch.log(1 - squashed.pow(2) + 1e-6).sum(-1)
        return center + scale * squashed, log_prob

    def _critic_value(self, states: Tensor, actions: Tensor, target: bool = False) -> Tensor:
        """min(Q1, Q2)(s, a) (of the target nets when `target`): (K, M)."""
        q = self._q_values(("q1_target", "q2_target") if target else ("q1", "q2"), states, actions)
        return torch.minimum(q[..., 0], q[..., 1])

    def _noise(self, generators: list[torch.Generator], rows: int, uniform: bool = False) -> Tensor:
        """(K, rows, A) draws, member k's from generator k (CPU generators, the draws moved to the device)."""
        fill = (lambda t, g: t.uniform_(generator=g)) if uniform else (lambda t, g: t.normal_(generator=g))
        return self._per_member(generators, (rows, self.action_dim), fill)

    @torch.no_grad()
    def rank(self, actions: Tensor) -> Tensor:
        """(K, B, A) actions → (K, B, slate) slates, each member with its own ranker's tables (rankers.py); GeMS
        takes the first maximal item per slot, as `GeMS.rank`."""
        K, B, _ = actions.shape
        if self.ranker_kind is TopKRanker:
            scores = torch.bmm(actions, self.tensors["ranker.item_embeddings"].transpose(1, 2))
            return scores.topk(self.slate_size, dim=-1, sorted=True).indices
        h = self._sequential("ranker.gems.decoder", actions, frozen=True)
        queries = torch.baddbmm(*self._linear_operands("ranker.gems.slate_head.weight", "ranker.gems.slate_head.bias",
                                                       h, frozen=True))
        queries = queries.reshape(K, B * self.slate_size, self.item_dim)
        table_t = self._frozen_transposed("ranker.gems.item_embeddings.weight")  # (K, D, N)
        if queries.device.type == "cpu" and queries.shape[1] >= _RANK_CHUNK_ROWS:
            # Many users per member (collection): fresh batched (K, rows, N) score blocks cost far more per row
            # than `first_argmax_of_products` per member (one reused buffer, a two-level argmax; BENCHMARKS.md).
            ranks = torch.stack([first_argmax_of_products(queries[k], table_t[k]) for k in range(K)])
        else:
            ranks = torch.empty(K, queries.shape[1], dtype=torch.int64, device=queries.device)
            rows = max(64, _RANK_CHUNK_ROWS // K)  # the (K, rows, N) score block stays the size of one member's
            for start in range(0, queries.shape[1], rows):
                ranks[:, start:start + rows] = torch.bmm(queries[:, start:start + rows], table_t).max(dim=-1).indices
        return ranks.view(K, B, self.slate_size)

    @torch.no_grad()
    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        state = self.belief_state()
        if mode == "random":
            center, scale = self._box()
            action = center + scale * (self._noise(generators, state.shape[1], uniform=True) - 0.5)
        else:
            action = self._policy_action(mode, state, generators)
        return self.rank(action), action

    def _policy_action(self, mode: ActMode, state: Tensor, generators: list[torch.Generator]) -> Tensor:
        """The actor's action (K, B, A) on states (K, B, S) in mode "explore" or "greedy"."""
        if mode == "explore":
            return self.squash(*self._policy_head(state), self._noise(generators, state.shape[1]), False)[0]
        if mode == "greedy":
            center, scale = self._box()
            return center + scale * torch.tanh(self._policy_head(state)[0])
        raise ValueError(f"unknown act mode {mode!r}")

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward: Callable[[Tensor], None] = default_backward) -> list[dict[str, float]]:
        """Steps 1–5 of the module docstring, every member on its own batch (leading K dimension). The policy
        head runs once over all H + 1 states (the actor's weights do not change between the two uses)."""
        K, E, H = batch.rewards.shape
        n = E * H
        actor_states = self.encode_episodes("actor_belief", batch.slates, batch.clicks)  # (K, E, H+1, S)
        critic_states = self.encode_episodes("critic_belief", batch.slates, batch.clicks)
        s_c = critic_states[:, :, :H].reshape(K, n, -1)
        alpha = self.tensors["alpha"].detach().clone().unsqueeze(1)  # (K, 1)
        all_states = actor_states.reshape(K, E * (H + 1), -1)
        head = [t.view(K, E, H + 1, -1) for t in self._policy_head(all_states, fold_bias=True)]
        next_policy = [t[:, :, 1:].reshape(K, n, -1) for t in head]  # (mean, log std) at s_{t+1} and at s_t
        policy = [t[:, :, :H].reshape(K, n, -1) for t in head]
        with torch.no_grad():
            next_actions, next_log_prob = self.squash(*next_policy, self._noise(generators, n))
            s_c_next = critic_states[:, :, 1:].reshape(K, n, -1)
            next_q = self._critic_value(s_c_next, next_actions, target=True) - alpha * next_log_prob
            target = batch.rewards.reshape(K, n) + self.params.gamma * batch.not_done() * next_q  # 2. critic
        q = self._q_values(("q1", "q2"), s_c, batch.actions.reshape(K, n, -1))  # (K, n, 2)
        critic_loss = 0.5 * (q - target.unsqueeze(-1)).pow(2).mean(dim=1).sum(dim=-1)  # (K,)
        self._optimizer_step("critic", critic_loss, backward)
        critic_weights = [self.tensors[name] for name in self.tensors if name.startswith(("q1.", "q2."))]
        for t in critic_weights:  # 3. actor, the critics' weights frozen for this backward
            t.requires_grad_(False)
        try:
            new_actions, log_prob = self.squash(*policy, self._noise(generators, n))
            actor_loss = (alpha * log_prob - self._critic_value(s_c.detach(), new_actions)).mean(dim=1)
            self._optimizer_step("actor", actor_loss, backward)
        finally:
            for t in critic_weights:
                t.requires_grad_(True)
        columns = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha[:, 0],
                   "q_mean": q[..., 0].detach().mean(dim=1), "log_pi": log_prob.detach().mean(dim=1)}
        if self.params.auto_entropy:  # 4. temperature
            log_alpha = self.tensors["log_alpha"]
            alpha_loss = -(log_alpha.exp().unsqueeze(1) * (log_prob.detach() + self.target_entropy)).mean(dim=1)
            self._optimizer_step("alpha", alpha_loss, backward)
            with torch.no_grad():
                self.tensors["alpha"].copy_(log_alpha.detach().exp())
            columns["alpha_loss"] = alpha_loss.detach()
        self.tensors["update_count"] += 1  # 5. targets
        self._update_count += 1
        if self._update_count % self.params.target_update_frequency == 0:
            for net in ("q1", "q2"):
                self._polyak(net, self.params.tau)
        return member_metrics(columns)


def build_sac_gems(params: SACParams, env: TopicRec, inputs: AgentInputs) -> SACAgent:
    gems = require_input(inputs, "gems", "sac-gems")
    center, scale = require_input(inputs, "gems_bounds", "sac-gems")
    cfg = env.config
    if int(gems.num_items) != cfg.num_items or int(gems.slate_size) != cfg.slate_size:
        raise BadInput(f"the GeMS model is for {gems.num_items} items × {gems.slate_size} slots; "
                       f"the environment has {cfg.num_items} × {cfg.slate_size}.")
    dims = torch.as_tensor(center).numel()
    if dims != int(gems.latent_dim):
        raise BadInput(f"GeMS bounds have {dims} dims; the latent space has {gems.latent_dim}.")
    return SACAgent(params, cfg.num_items, cfg.slate_size, center, scale, ranker=GeMSRanker(gems))


def build_sac_topk(params: SACParams, env: TopicRec, table: torch.Tensor) -> SACAgent:
    ranker = TopKRanker(table, env.config.slate_size)
    center, scale = item_table_box(ranker.item_embeddings)
    return SACAgent(params, env.config.num_items, env.config.slate_size, center, scale, ranker=ranker)


def build_sac_topk_ideal(params: SACParams, env: TopicRec, inputs: AgentInputs) -> SACAgent:
    """Privileged: ranks with the environment's own item table."""
    return build_sac_topk(params, env, checked_item_table(env.item_embeddings, env, "the environment's item table"))


def build_sac_topk_mf(params: SACParams, env: TopicRec, inputs: AgentInputs) -> SACAgent:
    table = checked_item_table(require_input(inputs, "mf", "sac-topk-mf"), env, "the MF item table")
    return build_sac_topk(params, env, table)


register_agent(AgentSpec("sac-gems", "SAC+GeMS", SACParams, build_sac_gems, needs=("gems",), population=StackedSAC))
register_agent(AgentSpec("sac-topk-ideal", "SAC+TopK (ideal)", SACParams, build_sac_topk_ideal, privileged=True,
                         population=StackedSAC))
register_agent(AgentSpec("sac-topk-mf", "SAC+TopK (MF)", SACParams, build_sac_topk_mf, needs=("mf",),
                         population=StackedSAC))
