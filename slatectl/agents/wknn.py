"""SAC+WkNN: SAC with a Wolpertinger (k-nearest-neighbour) slate layer (notes §7.4; Dulac-Arnold et al. 2015).

The actor outputs a proto-action of K·D = 200 numbers (K = 10 slots × D = 20 embedding dims) in the box
of per-dimension min/max of the agent's item table (tiled over the slots). Turning it into a slate:
1. one D-dim query per slot (layout: quirk iii);
2. per slot, the `wolpertinger_k` = 10 items nearest to the query (Euclidean) are candidates;
3. the slots are filled greedily in rank order: for slot r, each candidate c is scored by the *target* Q1
   on the slate [items chosen for slots < r, c repeated in slots r … K−1]; the best is kept (an item may
   fill several slots, as in the reference).
The critic reads [s_c (20), the slate's item embeddings slot-major (200)]; the rest is the SAC of `sac.py`
(target entropy −K·D = −200). The actor is trained through Q(s_c, raw proto-action), and the critic
target uses the raw proto-action sampled at s'. "random" mode: K i.i.d. uniform items (duplicates
possible); the raw action is that slate's embedding in the proto-action layout.

Reference quirks — what we do (each one a parameter, so the reference behaviour stays reachable):
(i) Item table: the reference ranks with a frozen copy of the critic belief's from-scratch (N(0, 1))
    table, though its config names `ideal` and the paper says MF. **Reproduced by default** (`item_table:
    critic-belief`): it gave the published "very poor" numbers, uses no hidden env information, and the
    fix is ambiguous (ideal, MF, the trained table); `mf` (needs the MF input), `ideal` (privileged).
(ii) The critic is trained on the slate observed *in* s_t (produced by a_{t−1}), not the slate a_t
    produced: clearly a bug (the target r_t + γV(s_{t+1}) is paired with an action that did not cause
    it), **not reproduced by default** (`critic_on_shown_slate: false`; `true` reproduces it).
(iii) The kNN layer reads the proto-action dim-major (20 × 10: slot r's query is every 10th number) while
    the critic, fed the raw proto-action by the actor loss, reads it slot-major (10 × 20): clearly a bug,
    **not reproduced by default** (`proto_layout: slot-major`; `dim-major` reproduces it). (The box is
    tiled slot-major: with the random table all dimensions have nearly the same range anyway.)
(iv) The notes say only the actor's GRU runs online, so the reference presumably ranks with the actor's
    belief state (the critic was trained on the critic belief's); the notes do not say. **We run the
    critic's belief online and rank with it** (`rank_state: critic`; `actor` reproduces the inferred
    reference behaviour).
Kept as in the reference: target Q1 (not Q2, not the online critic) scores the candidates; k = 10;
`full_slate` true (the only mode implemented).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from slatectl.agents.base import ActMode, EpisodeBatch, default_backward
from slatectl.agents.nets import common_checks, one_of
from slatectl.agents.pretrained import AgentInputs, checked_item_table, require_input
from slatectl.agents.rankers import item_table_box
from slatectl.agents.sac import SACAgent, SACParams, StackedSAC
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.config_tools import check_params
from slatectl.errors import BadInput
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec

ITEM_TABLES = ("critic-belief", "ideal", "mf")
LAYOUTS = ("slot-major", "dim-major")
RANK_STATES = ("critic", "actor")


@dataclass(frozen=True)
class WkNNParams(SACParams):
    wolpertinger_k: int = 10
    full_slate: bool = True
    item_table: str = "critic-belief"  # quirk (i)
    critic_on_shown_slate: bool = False  # quirk (ii): true = reference bug
    proto_layout: str = "slot-major"  # quirk (iii): dim-major = reference bug
    rank_state: str = "critic"  # quirk (iv): actor = inferred reference behaviour

    def validate(self) -> None:
        check_params("agent", common_checks(self) + [
            (self.alpha >= 0, f"agent.alpha must be >= 0 (got {self.alpha})"),
            (self.wolpertinger_k >= 1, f"agent.wolpertinger_k must be >= 1 (got {self.wolpertinger_k})"),
            (self.full_slate, "full_slate must be true (the only Wolpertinger mode implemented)"),
            one_of(self, "item_table", ITEM_TABLES), one_of(self, "proto_layout", LAYOUTS),
            one_of(self, "rank_state", RANK_STATES),
        ])

    def needs(self) -> tuple[str, ...]:
        return ("mf",) if self.item_table == "mf" else ()


class WolpertingerSAC(SACAgent):
    """One SAC+WkNN run's layout: a `SACAgent` with its `item_table` buffer and the table's squared norms."""

    def __init__(self, params: WkNNParams, num_items: int, slate_size: int, item_table: torch.Tensor | None):
        """item_table None = a frozen copy of the critic belief's initial (random) table (quirk i)."""
        if item_table is not None and item_table.shape[0] < params.wolpertinger_k:
            raise BadInput(f"wolpertinger_k ({params.wolpertinger_k}) exceeds the number of items.")
        dim = params.item_embedd_dim if item_table is None else item_table.shape[1]
        placeholder = torch.zeros(slate_size * dim)
        super().__init__(params, num_items, slate_size, placeholder, placeholder, critic_action_dim=slate_size * dim)
        table = (self.critic_belief.item_embeddings.weight if item_table is None
                 else torch.as_tensor(item_table, dtype=torch.float32)).detach().clone()
        self.register_buffer("item_table", table)
        self.register_buffer("item_sq_norms", table.pow(2).sum(dim=1))
        center, scale = item_table_box(table)
        self.action_center.copy_(center.repeat(slate_size))  # tiled: index i ↔ dim i mod D
        self.action_scale.copy_(scale.repeat(slate_size))
        self.item_dim, self.k = dim, min(params.wolpertinger_k, num_items)


class StackedWkNN(StackedSAC):
    """K ≥ 1 SAC+WkNN runs stacked: `StackedSAC` with the slate layer (module doc; docs/population.md, "SAC+WkNN")."""

    layout = WolpertingerSAC
    rankers = (type(None),)  # the slate layer below ranks

    def __init__(self, members: list[WolpertingerSAC]):
        super().__init__(members)
        self.num_items, self.item_dim, self.k = members[0].num_items, members[0].item_dim, members[0].k
        self.online_critic = self.params.rank_state == "critic"  # quirk (iv)
        self._critic_hidden: Tensor | None = None

    def _queries(self, proto: Tensor) -> Tensor:
        """(K, B, slate·D) proto-actions → (K, B, slate, D) per-slot queries (layout: quirk iii)."""
        if self.params.proto_layout == "dim-major":
            return proto.unflatten(2, (self.item_dim, self.slate_size)).transpose(2, 3)
        return proto.unflatten(2, (self.slate_size, self.item_dim))

    def _as_proto(self, slot_vectors: Tensor) -> Tensor:
        if self.params.proto_layout == "dim-major":
            return slot_vectors.transpose(2, 3).flatten(2)
        return slot_vectors.flatten(2)

    @torch.no_grad()
    def observe(self, slates: Tensor, clicks: Tensor) -> None:
        if self.online_critic:  # `begin_episodes` clears the actor's belief first: then the critic's starts anew
            hidden = self._critic_hidden if self._hidden is not None else None
            self._critic_hidden = self._belief_step("critic_belief", hidden, slates, clicks)
        super().observe(slates, clicks)

    def candidates(self, proto: Tensor) -> Tensor:
        """(K, B, slate·D) → (K, B, slate, k) the k items nearest (Euclidean) to each slot's query."""
        table = self.tensors["item_table"]  # (K, N, D)
        scores = torch.matmul(self._queries(proto), table.transpose(1, 2).unsqueeze(1))  # (K, B, slate, N)
        distances = self.tensors["item_sq_norms"][:, None, None, :] - 2 * scores
        return distances.topk(self.k, dim=-1, largest=False, sorted=True).indices

    @torch.no_grad()
    def wolpertinger_slate(self, proto: Tensor, states: Tensor) -> Tensor:
        """Greedy slot-by-slot refinement of the kNN candidates with each member's target Q1 (steps 2–3 of the
        module docstring): (K, B, slate·D) proto-actions, (K, B, S) states → (K, B, slate)."""
        cand = self.candidates(proto)  # (K, B, slate, k)
        K, B, S, k = cand.shape
        D = self.item_dim
        cand_emb = self._member_rows("item_table", cand)  # (K, B, slate, k, D)
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
            chosen_emb[:, :, r] = self._member_rows("item_table", chosen[:, :, r])
        return chosen

    @torch.no_grad()
    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        state = self.belief_state()
        if mode == "random":
            slates = self._random_slates(generators, state.shape[1])
            return slates, self._as_proto(self._member_rows("item_table", slates))
        proto = self._policy_action(mode, state, generators)
        return self.wolpertinger_slate(proto, self._critic_hidden if self.online_critic else state), proto

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        """StackedSAC.update with the critic's actions = the slates' embeddings, slot-major (quirk ii picks
        which slates)."""
        slates = batch.slates[:, :, :-1] if self.params.critic_on_shown_slate else batch.rec_slates
        actions = self._member_rows("item_table", slates).flatten(-2)
        return super().update(replace(batch, actions=actions), generators, backward)


def build_sac_wknn(params: WkNNParams, env: TopicRec, inputs: AgentInputs) -> WolpertingerSAC:
    table = None
    if params.item_table == "ideal":
        table = checked_item_table(env.item_embeddings, env, "the environment's item table")
    elif params.item_table == "mf":
        table = checked_item_table(require_input(inputs, "mf", "sac-wknn"), env, "the MF item table")
    return WolpertingerSAC(params, env.config.num_items, env.config.slate_size, table)


register_agent(AgentSpec("sac-wknn", "SAC+WkNN", WkNNParams, build_sac_wknn, population=StackedWkNN))
