"""SAC+WkNN for a population of K runs: `StackedSAC` with the Wolpertinger slate layer stacked.

Everything SAC (stacked weights, the update, temperatures, targets, boxes) is `StackedSAC`'s; what
differs from SAC+GeMS/TopK is what `WolpertingerSAC` changes, each done here for all members at once:

- acting: the k nearest items of each slot's query in member k's own item table (`item_table`, a
  buffer of its state dict, so stacked like the weights: each member's critic-belief copy, MF or env
  table), then the greedy slot-by-slot refinement with member k's target Q1 — one batched Q1 call per
  slot for all members' B·k candidate slates;
- the critic belief also runs online when it ranks (`rank_state: critic`, the default);
- the critic's action input is the embedding of the recommended (or, quirk ii, the shown) slate in the
  member's table, handed to `StackedSAC.update` as the batch's actions.

Member k draws from its generator what the solo agent draws from the global RNG: `randint(N, (B,
slate))` per random-phase step, `randn(B, K·D)` per exploring step, then the SAC update's draws.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from slatectl.agents.base import ActMode, EpisodeBatch, default_backward
from slatectl.agents.sac_population import StackedSAC
from slatectl.agents.spec import register_population
from slatectl.agents.wknn import WolpertingerSAC
from slatectl.sim.member_envs import MemberEnvs


class StackedWkNN(StackedSAC):
    def __init__(self, members: list[WolpertingerSAC]):
        super().__init__(members)
        reference = members[0]
        self.num_items = reference.num_items
        self.item_dim = reference.item_dim
        self.k = reference.k
        self.online_critic = reference.online_critic_belief
        self._critic_hidden: Tensor | None = None

    def _check_members(self, members: list[WolpertingerSAC]) -> None:
        reference = members[0]
        for m in members:
            if type(m) is not WolpertingerSAC:
                raise TypeError("StackedWkNN stacks WolpertingerSAC agents")
            if m.params != reference.params or m.item_dim != reference.item_dim or m.k != reference.k:
                raise ValueError("population members must share the SAC+WkNN hyper-parameters and item dimension")

    # -- member k's item table ---------------------------------------------------------------------
    def _lookup(self, items: Tensor) -> Tensor:
        """(K, …) item ids → (K, …, D) rows of each member's own item table."""
        return self._member_rows("item_table", items)

    def slate_embedding(self, slates: Tensor) -> Tensor:
        """(K, …, slate) items → (K, …, slate·D) the critic's slot-major action vector."""
        return self._lookup(slates).flatten(-2)

    def _queries(self, proto: Tensor) -> Tensor:
        """(K, B, slate·D) proto-actions → (K, B, slate, D) per-slot queries (WolpertingerSAC._queries)."""
        K, B = proto.shape[:2]
        if self.params.proto_layout == "dim-major":
            return proto.view(K, B, self.item_dim, self.slate_size).transpose(2, 3)
        return proto.view(K, B, self.slate_size, self.item_dim)

    def _as_proto(self, slot_vectors: Tensor) -> Tensor:
        if self.params.proto_layout == "dim-major":
            return slot_vectors.transpose(2, 3).flatten(2)
        return slot_vectors.flatten(2)

    # -- acting ------------------------------------------------------------------------------------
    @torch.no_grad()
    def begin_episodes(self, slates: Tensor, clicks: Tensor) -> None:
        self._critic_hidden = None
        super().begin_episodes(slates, clicks)

    @torch.no_grad()
    def observe(self, slates: Tensor, clicks: Tensor) -> None:
        super().observe(slates, clicks)
        if self.online_critic:
            self._critic_hidden = self._belief_step("critic_belief", self._critic_hidden, slates, clicks)

    def candidates(self, proto: Tensor) -> Tensor:
        """(K, B, slate·D) → (K, B, slate, k) the k items nearest (Euclidean) to each slot's query."""
        table = self.tensors["item_table"]  # (K, N, D)
        scores = torch.matmul(self._queries(proto), table.transpose(1, 2).unsqueeze(1))  # (K, B, slate, N)
        distances = self.tensors["item_sq_norms"][:, None, None, :] - 2 * scores
        return distances.topk(self.k, dim=-1, largest=False, sorted=True).indices

    @torch.no_grad()
    def wolpertinger_slate(self, proto: Tensor, states: Tensor) -> Tensor:
        """WolpertingerSAC.wolpertinger_slate for every member: (K, B, slate·D), (K, B, S) → (K, B, slate)."""
        cand = self.candidates(proto)  # (K, B, slate, k)
        K, B, S, k = cand.shape
        D = self.item_dim
        cand_emb = self._lookup(cand)  # (K, B, slate, k, D)
        chosen = torch.empty(K, B, S, dtype=torch.int64, device=proto.device)
        chosen_emb = torch.empty(K, B, S, D, device=proto.device)
        state_rep = states[:, :, None, :].expand(K, B, k, states.shape[-1])
        for r in range(S):
            fill = cand_emb[:, :, r, :, None, :].expand(K, B, k, S - r, D)
            prefix = chosen_emb[:, :, None, :r, :].expand(K, B, k, r, D)
            slate_emb = torch.cat([prefix, fill], dim=3).reshape(K, B, k, S * D)
            x = torch.cat([state_rep, slate_emb], dim=-1).reshape(K, B * k, -1)
            q = self._sequential("q1_target", x).view(K, B, k)
            best = q.argmax(dim=2, keepdim=True)
            chosen[:, :, r] = cand[:, :, r].gather(2, best).squeeze(2)
            chosen_emb[:, :, r] = self._lookup(chosen[:, :, r])
        return chosen

    @torch.no_grad()
    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        state = self.belief_state()
        B = state.shape[1]
        if mode == "random":
            slates = self._random_slates(generators, B)
            return slates, self._as_proto(self._lookup(slates))
        if mode == "explore":
            proto, _ = self.sample_action(state, self._noise(generators, B), with_log_prob=False)
        elif mode == "greedy":
            mean, _ = self._policy_head(state)
            center, scale = self._box()
            proto = center + scale * torch.tanh(mean)
        else:
            raise ValueError(f"unknown act mode {mode!r}")
        rank_state = self._critic_hidden if self.online_critic else state
        return self.wolpertinger_slate(proto, rank_state), proto

    # -- training ----------------------------------------------------------------------------------
    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        """StackedSAC.update with the critic's actions = the slates' embeddings (WolpertingerSAC.critic_actions)."""
        H = batch.rewards.shape[2]
        slates = batch.slates[:, :, :H] if self.params.critic_on_shown_slate else batch.rec_slates
        return super().update(replace(batch, actions=self.slate_embedding(slates)), generators, backward)


register_population("sac-wknn", StackedWkNN)
