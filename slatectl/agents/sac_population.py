"""SAC+GeMS and SAC+TopK for a population of K runs: the K members' weights stacked, one kernel for all.

Every tensor of a member `SACAgent`'s state dict (same keys: `actor_belief.gru.weight_ih_l0`, `q1.0.weight`,
`ranker.gems.decoder.0.weight`, `log_alpha`, …) is stacked along a new leading member dimension K. The
forward passes are written with batched matmuls (`baddbmm`/`bmm`), one GRU cell per time step over
(K, E, ·), and an embedding lookup into the K item tables laid end to end, so each op serves all members.

Why this equals K independent solo updates (docs/population.md):
- each loss is the SUM over members of the member's own loss (each a mean over its own transitions,
  exactly the solo formula), and member k's loss depends only on slice k of every stacked tensor, so the
  gradient of the sum w.r.t. slice k is the gradient of member k's loss;
- Adam is elementwise with a step count shared by all slices (members step together), so one Adam over
  stacked tensors is K Adams; there is no gradient clipping or other cross-parameter coupling in SAC here;
- entropy temperature (log α, α), target networks (Polyak per element) and action boxes are per member;
- randomness comes from each member's own `torch.Generator`, drawn in the same order and shapes as the
  solo agent draws from the global generator (randperm of the replay, then next-state noise, then
  current-state noise; one (B, A) draw per acting step), so member k reproduces its solo run.

The member `SACAgent` modules are kept: they define the layout (which keys, which optimizer holds which
parameter, in which order) and are what checkpoints and resume states are written as, so a member's
checkpoint is an ordinary `sac-gems` checkpoint and its resume state an ordinary solo resume state.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slatectl.agents.base import ActMode, EpisodeBatch
from slatectl.agents.rankers import GeMSRanker, TopKRanker
from slatectl.agents.sac import LOG_STD_MAX, LOG_STD_MIN, SACAgent, default_backward
from slatectl.agents.spec import register_population
from slatectl.agents.stacked import StackedAgent
from slatectl.sim.member_envs import MemberEnvs

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: Rows of slot queries scored against the item table at once when ranking (keeps the block in cache).
_RANK_CHUNK_ROWS = 2048


class StackedSAC(StackedAgent):
    """K SAC members with stacked weights, all with GeMS rankers (SAC+GeMS) or all with TopK rankers
    (SAC+TopK ideal / MF). Built from K plain `SACAgent`s with identical architecture."""

    def __init__(self, members: list[SACAgent]):
        if not members:
            raise ValueError("a population needs at least one member")
        reference = members[0]
        self.ranker_kind = type(reference.ranker)
        self._check_members(members)
        self.members = members
        self.K = len(members)
        self.params = reference.params
        self.action_dim = reference.action_dim
        self.target_entropy = reference.target_entropy
        self.device = reference.action_center.device
        states = [m.state_dict() for m in members]
        self.tensors: dict[str, Tensor] = {
            name: torch.stack([s[name].detach() for s in states]).clone() for name in states[0]}
        name_of = {id(p): n for n, p in reference.named_parameters()}
        self._optimizer_names: dict[str, list[str]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for opt_name, optimizer in reference.optimizers().items():
            group = optimizer.param_groups[0]
            names = [name_of[id(p)] for p in group["params"]]
            for n in names:
                self.tensors[n].requires_grad_(True)
            hyper = {k: v for k, v in group.items() if k != "params"}
            self._optimizer_names[opt_name] = names
            self.optimizers[opt_name] = type(optimizer)([self.tensors[n] for n in names], **hyper)
        nets = ("actor", "q1", "q2", "q1_target", "q2_target")
        if self.ranker_kind is GeMSRanker:
            nets += ("ranker.gems.decoder",)
            self.item_dim = int(reference.ranker.gems.item_dim)
        self._layers = {prefix: list(reference.get_submodule(prefix)) for prefix in nets}
        self.slate_size = int(reference.slate_size)
        self._hidden: Tensor | None = None

    def _check_members(self, members: list[SACAgent]) -> None:
        """Which members this class stacks (a subclass with its own acting overrides it)."""
        reference = members[0]
        for m in members:
            if type(m) is not SACAgent or type(m.ranker) is not self.ranker_kind or \
                    self.ranker_kind not in (GeMSRanker, TopKRanker):
                raise TypeError("StackedSAC stacks plain SACAgents that all rank with GeMS or all with TopK")
            if m.params != reference.params or m.action_dim != reference.action_dim or m.online_critic_belief:
                raise ValueError("population members must share the SAC hyper-parameters and the latent dimension")

    # -- member views ----------------------------------------------------------------------------------
    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's weights as an ordinary `SACAgent` state dict (on CPU)."""
        return {name: t[k].detach().to("cpu").clone() for name, t in self.tensors.items()}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        missing = set(self.tensors) ^ set(state)
        if missing:
            raise KeyError(f"member state does not match the agent: {sorted(missing)[:5]}")
        for name, t in self.tensors.items():
            t[k].copy_(state[name].to(t.device, t.dtype))

    def member_optimizer_states(self, k: int) -> dict[str, dict]:
        """Member k's optimizer states in the solo agent's format (same parameter order)."""
        out = {}
        for name, optimizer in self.optimizers.items():
            full = optimizer.state_dict()
            out[name] = {"state": {i: {key: (v if key == "step" else v[k]).detach().to("cpu").clone()
                                       for key, v in s.items()} for i, s in full["state"].items()},
                         "param_groups": full["param_groups"]}
        return out

    def load_optimizer_states(self, member_states: list[dict[str, dict]]) -> None:
        """Restore from K solo-format optimizer states (all members must be at the same update count)."""
        for name, optimizer in self.optimizers.items():
            per_member = [s[name] for s in member_states]
            state = {}
            for i in per_member[0]["state"]:
                entry = {}
                for key, v in per_member[0]["state"][i].items():
                    entry[key] = v.clone() if key == "step" else torch.stack([m["state"][i][key] for m in per_member])
                state[i] = entry
            optimizer.load_state_dict({"state": state, "param_groups": per_member[0]["param_groups"]})

    def to(self, device: torch.device | str) -> "StackedSAC":
        """Move the stacked tensors (keeping them the optimizers' parameters); call before any update."""
        device = torch.device(device)
        if device != self.device:
            with torch.no_grad():
                for t in self.tensors.values():
                    t.data = t.data.to(device)
            self.device = device
        return self

    # -- batched building blocks -------------------------------------------------------------------------
    def _sequential(self, prefix: str, x: Tensor) -> Tensor:
        """A member nn.Sequential of Linear/ReLU layers, applied per member: x (K, M, in) → (K, M, out)."""
        for i, layer in enumerate(self._layers[prefix]):
            if isinstance(layer, nn.Linear):
                w, b = self.tensors[f"{prefix}.{i}.weight"], self.tensors[f"{prefix}.{i}.bias"]
                x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            elif isinstance(layer, nn.ReLU):
                x = F.relu(x)
            else:
                raise TypeError(f"{prefix}.{i}: only Linear and ReLU layers can be stacked")
        return x

    def _features(self, belief: str, slates: Tensor, clicks: Tensor) -> Tensor:
        """(K, …, S) items and clicks → (K, …, S·(D+1)), each member with its own belief item table."""
        table = self.tensors[f"{belief}.item_embeddings.weight"]  # (K, N, D)
        K, N, D = table.shape
        offsets = (torch.arange(K, device=slates.device) * N).view(K, *([1] * (slates.dim() - 1)))
        emb = F.embedding(slates + offsets, table.reshape(K * N, D))
        return torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(-2)

    def _gru_input(self, belief: str, features: Tensor) -> Tensor:
        w, b = self.tensors[f"{belief}.gru.weight_ih_l0"], self.tensors[f"{belief}.gru.bias_ih_l0"]
        shape = features.shape
        x = features.reshape(shape[0], -1, shape[-1])
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)).view(*shape[:-1], w.shape[1])

    def _gru_cell(self, belief: str, gates_in: Tensor, h: Tensor) -> Tensor:
        """nn.GRU's cell (gates r, z, n in PyTorch's order) for (K, B, 3S) input gates and (K, B, S) state."""
        w, b = self.tensors[f"{belief}.gru.weight_hh_l0"], self.tensors[f"{belief}.gru.bias_hh_l0"]
        gates_h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        i_r, i_z, i_n = gates_in.chunk(3, dim=-1)
        h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n)

    def encode_episodes(self, belief: str, slates: Tensor, clicks: Tensor) -> Tensor:
        """(K, E, T, S) slates and clicks → (K, E, T, state) beliefs from a zero state (GRUBelief's)."""
        gates = self._gru_input(belief, self._features(belief, slates, clicks))
        K, E, T = gates.shape[:3]
        h = gates.new_zeros(K, E, self.params.belief_state_dim)
        outputs = []
        for t in range(T):
            h = self._gru_cell(belief, gates[:, :, t], h)
            outputs.append(h)
        return torch.stack(outputs, dim=2)

    def _policy_head(self, states: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self._sequential("actor", states).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _box(self) -> tuple[Tensor, Tensor]:
        return self.tensors["action_center"].unsqueeze(1), self.tensors["action_scale"].unsqueeze(1)

    def sample_action(self, states: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """SACAgent.sample_action with the member's noise given: (K, M, S), (K, M, A) → action, log π."""
        mean, log_std = self._policy_head(states)
        u = mean + log_std.exp() * noise
        squashed = torch.tanh(u)
        log_prob = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        log_prob = log_prob - torch.log(1 - squashed.pow(2) + 1e-6).sum(-1)
        center, scale = self._box()
        return center + scale * squashed, log_prob

    def _critic_value(self, states: Tensor, actions: Tensor, target: bool = False) -> Tensor:
        x = torch.cat([states, actions], dim=-1)
        q1, q2 = ("q1_target", "q2_target") if target else ("q1", "q2")
        return torch.minimum(self._sequential(q1, x), self._sequential(q2, x)).squeeze(-1)

    def _noise(self, generators: list[torch.Generator], rows: int, uniform: bool = False) -> Tensor:
        """(K, rows, A) draws, member k's from generator k (CPU generators: the solo run's CPU stream;
        on CUDA the draws are moved, so a CUDA member does not reproduce a solo CUDA run's noise)."""
        draw = torch.rand if uniform else torch.randn
        noise = torch.stack([draw((rows, self.action_dim), generator=g, device=g.device) for g in generators])
        return noise.to(self.device)

    @torch.no_grad()
    def rank(self, actions: Tensor) -> Tensor:
        """(K, B, A) actions → (K, B, slate) slates, each member with its own ranker."""
        if self.ranker_kind is TopKRanker:
            # TopKRanker.rank: the K items with the largest ⟨e_i, a⟩ over member k's item table, sorted.
            scores = torch.bmm(actions, self.tensors["ranker.item_embeddings"].transpose(1, 2))
            return scores.topk(self.slate_size, dim=-1, sorted=True).indices
        return self._rank_gems(actions)

    def _rank_gems(self, actions: Tensor) -> Tensor:
        """GeMSRanker.rank: per slot the argmax item of member k's decoder (first maximal item)."""
        K, B, _ = actions.shape
        h = self._sequential("ranker.gems.decoder", actions)
        w, b = self.tensors["ranker.gems.slate_head.weight"], self.tensors["ranker.gems.slate_head.bias"]
        queries = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)).reshape(K, B * self.slate_size, self.item_dim)
        table_t = self.tensors["ranker.gems.item_embeddings.weight"].transpose(1, 2)
        ranks = torch.empty(K, queries.shape[1], dtype=torch.int64, device=queries.device)
        rows = max(64, _RANK_CHUNK_ROWS // K)  # the (K, rows, N) score block stays the size of a solo one
        for start in range(0, queries.shape[1], rows):
            block = torch.bmm(queries[:, start:start + rows], table_t)
            ranks[:, start:start + rows] = block.max(dim=-1).indices
        return ranks.view(K, B, self.slate_size)

    # -- acting (online actor belief, (K, B, ·)) ---------------------------------------------------------
    @torch.no_grad()
    def begin_episodes(self, slates: Tensor, clicks: Tensor) -> None:
        self._hidden = None
        self.observe(slates, clicks)

    @torch.no_grad()
    def observe(self, slates: Tensor, clicks: Tensor) -> None:
        gates = self._gru_input("actor_belief", self._features("actor_belief", slates, clicks))
        h = self._hidden if self._hidden is not None else gates.new_zeros(*gates.shape[:2], self.params.belief_state_dim)
        self._hidden = self._gru_cell("actor_belief", gates, h)

    def belief_state(self) -> Tensor:
        if self._hidden is None:
            raise RuntimeError("no online belief: call begin_episodes first")
        return self._hidden

    @torch.no_grad()
    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        """(slates (K, B, slate), actions (K, B, A)); draws from member k's generator as SACAgent.act."""
        state = self.belief_state()
        B = state.shape[1]
        center, scale = self._box()
        if mode == "random":
            action = center + scale * (self._noise(generators, B, uniform=True) - 0.5)
        elif mode == "explore":
            action, _ = self.sample_action(state, self._noise(generators, B))
        elif mode == "greedy":
            mean, _ = self._policy_head(state)
            action = center + scale * torch.tanh(mean)
        else:
            raise ValueError(f"unknown act mode {mode!r}")
        return self.rank(action), action

    # -- training ---------------------------------------------------------------------------------------
    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward: Callable[[Tensor], None] = default_backward) -> list[dict[str, float]]:
        """One SAC update of every member on its own batch: `batch` fields have a leading K dimension."""
        p = self.params
        K, E, H = batch.rewards.shape
        n = E * H
        actor_states = self.encode_episodes("actor_belief", batch.slates, batch.clicks)  # (K, E, H+1, S)
        critic_states = self.encode_episodes("critic_belief", batch.slates, batch.clicks)
        s_a = actor_states[:, :, :H].reshape(K, n, -1)
        s_a_next = actor_states[:, :, 1:].reshape(K, n, -1).detach()
        s_c = critic_states[:, :, :H].reshape(K, n, -1)
        s_c_next = critic_states[:, :, 1:].reshape(K, n, -1).detach()
        actions = batch.actions.reshape(K, n, -1)
        rewards = batch.rewards.reshape(K, n)
        not_done = torch.ones(E, H, device=rewards.device)
        not_done[:, -1] = 0.0
        not_done = not_done.reshape(1, n)
        alpha = self.tensors["alpha"].detach().clone().unsqueeze(1)  # (K, 1)

        # 1. critic: Σ_k ½(MSE(Q1_k, y_k) + MSE(Q2_k, y_k))
        with torch.no_grad():
            next_actions, next_log_prob = self.sample_action(s_a_next, self._noise(generators, n))
            next_q = self._critic_value(s_c_next, next_actions, target=True) - alpha * next_log_prob
            target = rewards + p.gamma * not_done * next_q
        x = torch.cat([s_c, actions], dim=-1)
        q1, q2 = self._sequential("q1", x).squeeze(-1), self._sequential("q2", x).squeeze(-1)
        critic_loss = 0.5 * ((q1 - target).pow(2).mean(dim=1) + (q2 - target).pow(2).mean(dim=1))  # (K,)
        critic = self.optimizers["critic"]
        critic.zero_grad(set_to_none=True)
        backward(critic_loss.sum())
        critic.step()

        # 2. actor (critic weights frozen for this backward, critic states detached — as SACAgent)
        critic_weights = [self.tensors[n_] for n_ in self.tensors if n_.startswith(("q1.", "q2."))]
        for t in critic_weights:
            t.requires_grad_(False)
        try:
            new_actions, log_prob = self.sample_action(s_a, self._noise(generators, n))
            actor_loss = (alpha * log_prob - self._critic_value(s_c.detach(), new_actions)).mean(dim=1)
            actor = self.optimizers["actor"]
            actor.zero_grad(set_to_none=True)
            backward(actor_loss.sum())
        finally:
            for t in critic_weights:
                t.requires_grad_(True)
        actor.step()

        critic_loss, actor_loss = critic_loss.detach(), actor_loss.detach()
        metrics = [{"critic_loss": float(critic_loss[k]), "actor_loss": float(actor_loss[k]),
                    "alpha": float(alpha[k, 0]), "q_mean": float(q1[k].detach().mean()),
                    "log_pi": float(log_prob[k].detach().mean())} for k in range(K)]
        # 3. temperature, per member
        if p.auto_entropy:
            log_alpha = self.tensors["log_alpha"]
            alpha_loss = -(log_alpha.exp().unsqueeze(1) * (log_prob.detach() + self.target_entropy)).mean(dim=1)
            temperature = self.optimizers["alpha"]
            temperature.zero_grad(set_to_none=True)
            backward(alpha_loss.sum())
            temperature.step()
            with torch.no_grad():
                self.tensors["alpha"].copy_(log_alpha.detach().exp())
            for k in range(K):
                metrics[k]["alpha_loss"] = float(alpha_loss[k].detach())

        # 4. targets, per element (so per member)
        with torch.no_grad():
            self.tensors["update_count"] += 1
            if int(self.tensors["update_count"][0]) % p.target_update_frequency == 0:
                for net in ("q1", "q2"):
                    online = [t for n_, t in self.tensors.items() if n_.startswith(f"{net}.")]
                    target = [self.tensors[n_.replace(f"{net}.", f"{net}_target.", 1)]
                              for n_ in self.tensors if n_.startswith(f"{net}.")]
                    torch._foreach_lerp_(target, online, p.tau)
        return metrics

    def train(self) -> None:
        pass  # no dropout / batch norm: train and eval modes are the same computation

    def eval(self) -> None:
        pass


for _name in ("sac-gems", "sac-topk-ideal", "sac-topk-mf"):
    register_population(_name, StackedSAC)
