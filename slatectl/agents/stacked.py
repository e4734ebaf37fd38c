"""The stacked agent: K ≥ 1 members of one agent type (a lone run is K = 1), every tensor of the members'
layouts (`slatectl.agents.base.Agent`) stacked along a leading member dimension under the same key. It holds
all of the agent's math; the trainer and collection use only `StackedAgent`'s public methods. The protocol,
the shared blocks and why one update of the stack is K separate updates: docs/population.md, "Agents".
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, default_backward
from slatectl.agents.batched_gru import gru_unroll
from slatectl.sim.member_envs import MemberEnvs


#: Optimizer settings that choose a kernel, not the arithmetic: the stacked optimizers use fused Adam; member
#: states are exported with the layouts' own values, so a checkpointed run keeps its own kernel choice.
_KERNEL_CHOICES = ("foreach", "fused")


class StackedAgent:
    """Base of the stacked agents: the layouts of K runs of one class and hyper-parameters, stacked."""

    #: Prefixes of the members' nn.Sequential MLPs that `_sequential` evaluates stacked (if the layout has them).
    nets: tuple[str, ...] = ()
    #: The member's GRU belief that runs online while acting.
    online_belief: str = "belief"

    def __init__(self, members: list[Agent]):
        if not members:
            raise ValueError("a population needs at least one member")
        self._check_members(members)
        reference = members[0]
        self.K = len(members)
        self.params = reference.params
        self.action_dim = reference.action_dim
        self.updates_during_random_phase = reference.updates_during_random_phase
        states = [m.state_dict() for m in members]
        self.device = next(iter(states[0].values())).device if states[0] else torch.device("cpu")  # (no weights)
        self.tensors: dict[str, Tensor] = {
            name: torch.stack([s[name].detach() for s in states]).clone() for name in states[0]}
        name_of = {id(p): n for n, p in reference.named_parameters()}
        self._layout_kernels: dict[str, dict] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for opt_name, optimizer in reference.optimizers().items():
            if len(optimizer.param_groups) != 1:
                raise ValueError("stacked optimizers support one parameter group")
            group = optimizer.param_groups[0]
            names = [name_of[id(p)] for p in group["params"]]
            for n in names:
                self.tensors[n].requires_grad_(True)
            hyper = {k: v for k, v in group.items() if k != "params"}
            self._layout_kernels[opt_name] = {k: hyper[k] for k in _KERNEL_CHOICES if k in hyper}
            if isinstance(optimizer, torch.optim.Adam) and "fused" in hyper and not hyper.get("differentiable"):
                hyper.update(fused=True, foreach=None)  # same formula per element; other optimizers as the layout's
            self.optimizers[opt_name] = type(optimizer)([self.tensors[n] for n in names], **hyper)
        modules = dict(reference.named_modules())
        self._layers = {prefix: list(modules[prefix]) for prefix in self.nets if prefix in modules}
        for prefix, layers in self._layers.items():
            if any(type(layer) is not (nn.ReLU if i % 2 else nn.Linear) for i, layer in enumerate(layers)):
                raise TypeError(f"{prefix}: only Linear layers, each followed by a ReLU or not, can be stacked")
        self._hidden: Tensor | None = None
        self._acting_views: dict[str, tuple[int, Tensor, Tensor]] = {}  # `_linear_operands`
        self._row_offsets: dict[tuple, Tensor] = {}  # `_member_rows`
        self._frozen_copies: dict[str, tuple[tuple[int, int], Tensor]] = {}  # `_frozen_transposed`

    def _check_members(self, members: list[Agent]) -> None:
        """Which members this class stacks: one class, equal hyper-parameters (a subclass may check more)."""
        reference = members[0]
        if any(type(m) is not type(reference) or m.params != reference.params for m in members):
            raise ValueError(f"{type(self).__name__} stacks agents of one class with equal hyper-parameters")

    # -- the loop's contract -----------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The training step of every member (they move in lockstep); agents with a schedule override."""

    def train(self) -> None:
        """No dropout / batch norm in the agents: train and eval modes are the same computation."""

    eval = train

    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        """(slates (K, B, slate), raw actions (K, B, A)) in mode "random" (the reference's random phase),
        "explore" (the training action) or "greedy" (evaluation); member k draws from `generators[k]`."""
        raise NotImplementedError

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward: Callable[[Tensor], None] = default_backward) -> list[dict[str, float]]:
        """One update of every member on its own batch (fields with a leading K dimension), each loss
        through `backward` (the harness's) → one metrics dict per member."""
        raise NotImplementedError

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's weights as its layout's state dict (on CPU): an ordinary per-run checkpoint."""
        return {name: t[k].detach().to("cpu").clone() for name, t in self.tensors.items()}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        if different := set(self.tensors) ^ set(state):
            raise KeyError(f"member state does not match the agent: {sorted(different)[:5]}")
        for name, t in self.tensors.items():
            t[k].copy_(state[name].to(t.device, t.dtype))

    def member_optimizer_states(self, k: int) -> dict[str, dict]:
        """Member k's optimizer states in its layout's format (its parameter order, shared `step`, its kernels)."""
        out = {}
        for name, optimizer in self.optimizers.items():
            full = optimizer.state_dict()
            out[name] = {"state": {i: {key: (v if key == "step" else v[k]).detach().to("cpu").clone()
                                       for key, v in s.items()} for i, s in full["state"].items()},
                         "param_groups": [{**g, **self._layout_kernels[name]} for g in full["param_groups"]]}
        return out

    def load_optimizer_states(self, member_states: list[dict[str, dict]]) -> None:
        """Restore K layout-format optimizer states (members at one update count), keeping the stacked kernels."""
        for name, optimizer in self.optimizers.items():
            per_member = [s[name] for s in member_states]
            state = {i: {key: v.clone() if key == "step" else torch.stack([m["state"][i][key] for m in per_member])
                         for key, v in first.items()} for i, first in per_member[0]["state"].items()}
            kernels = {k: optimizer.param_groups[0][k] for k in _KERNEL_CHOICES if k in optimizer.param_groups[0]}
            groups = [{**g, **kernels} for g in per_member[0]["param_groups"]]
            optimizer.load_state_dict({"state": state, "param_groups": groups})

    def to(self, device: torch.device | str) -> "StackedAgent":
        """Move the stacked tensors (still the optimizers' parameters) and optimizer state; call before updates."""
        device = torch.device(device)
        if device != self.device:
            for t in self.tensors.values():
                t.data = t.data.to(device)
            for optimizer in self.optimizers.values():
                fused = optimizer.param_groups[0].get("fused")  # Adam's scalar `step` stays on the host unless fused
                for state in optimizer.state.values():
                    state.update({key: value.to(device) for key, value in state.items()
                                  if torch.is_tensor(value) and (key != "step" or value.dim() > 0 or fused)})
            self.device = device
        return self

    def _sequential(self, prefix: str, x: Tensor, fold_bias: bool = False, members: slice = slice(None),
                    frozen: bool = False) -> Tensor:
        """A member nn.Sequential of Linear/ReLU layers, applied per member: x (K, M, in) → (K, M, out), for the
        `members` whose rows x holds. ReLU runs in place (a matmul saves its inputs, not its output, for
        backward). `fold_bias` (many rows): the first bias becomes a last weight column against a column of
        ones, so the first matmul writes its output once. `frozen`: weights that never train."""
        depth = len(self._layers[prefix])
        for i in range(0, depth, 2):  # Linear, ReLU, Linear, … (checked at init)
            if members == slice(None) and not (fold_bias and i == 0):
                x = torch.baddbmm(*self._linear_operands(f"{prefix}.{i}.weight", f"{prefix}.{i}.bias", x, frozen))
            else:
                w, b = self.tensors[f"{prefix}.{i}.weight"][members], self.tensors[f"{prefix}.{i}.bias"][members]
                if fold_bias and i == 0:
                    ones = x.new_ones(*x.shape[:-1], 1)
                    x = torch.bmm(torch.cat([x, ones], dim=-1), torch.cat([w, b.unsqueeze(-1)], dim=-1).transpose(1, 2))
                else:
                    x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if i + 1 < depth:
                x = x.relu_()
        return x

    def _linear_operands(self, weight: str, bias: str, x: Tensor,
                         frozen: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The `baddbmm` arguments of a stacked Linear on x (K, M, in): ((K, 1, out) bias, x, (K, in, out) weightᵀ).
        Without autograd (acting: many tiny ops) the views are kept between calls, made again when `to` moves
        the storage (views from a no-grad call must not enter a graph); a `frozen` weight comes as a contiguous
        copy (`_frozen_transposed`). Figures: BENCHMARKS.md, "Kernel notes: stacked agents and SAC"."""
        w, b = self.tensors[weight], self.tensors[bias]
        if frozen:
            return b.unsqueeze(1), x, self._frozen_transposed(weight)
        if torch.is_grad_enabled():
            return b.unsqueeze(1), x, w.transpose(1, 2)
        cached = self._acting_views.get(weight)
        if cached is None or cached[0] != w.data_ptr():
            cached = self._acting_views[weight] = (w.data_ptr(), b.detach().unsqueeze(1), w.detach().transpose(1, 2))
        return cached[1], x, cached[2]

    def _frozen_transposed(self, name: str) -> Tensor:
        """A stacked matrix that never trains (K, a, b) as a contiguous (K, b, a) copy (acting reads GeMS's whole
        decoder every step: faster than the transposed view), made again when it changes (new storage after
        `to`, or a bumped version after `load_member_state_dict`)."""
        matrix = self.tensors[name]
        key = (matrix.data_ptr(), matrix._version)
        cached = self._frozen_copies.get(name)
        if cached is None or cached[0] != key:
            cached = self._frozen_copies[name] = (key, matrix.detach().transpose(1, 2).contiguous())
        return cached[1]

    def _member_rows(self, table_name: str, ids: Tensor) -> Tensor:
        """(K, …) row ids → (K, …, D) rows of each member's own table (the K tables laid end to end).
        index_select rather than F.embedding: same values; its backward (index_add) is faster on CPU."""
        table = self.tensors[table_name]  # (K, N, D)
        K, N, D = table.shape
        key = (N, ids.dim(), ids.device)
        if key not in self._row_offsets:  # member k's rows start at k·N
            self._row_offsets[key] = (torch.arange(K, device=ids.device) * N).view(K, *([1] * (ids.dim() - 1)))
        ids = ids + self._row_offsets[key]
        return table.reshape(K * N, D).index_select(0, ids.reshape(-1)).view(*ids.shape, D)

    def _gru_input(self, belief: str, slates: Tensor, clicks: Tensor) -> Tensor:
        """(K, …, S) items and clicks → the input half of the GRU gates (K, …, 3·state): the features (each
        member's own item rows, each followed by its click bit) of all steps through one matmul."""
        emb = self._member_rows(f"{belief}.item_embeddings.weight", slates)
        features = torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(-2)
        x = features.reshape(features.shape[0], -1, features.shape[-1])
        gates = torch.baddbmm(*self._linear_operands(f"{belief}.gru.weight_ih_l0", f"{belief}.gru.bias_ih_l0", x))
        return gates.view(*features.shape[:-1], gates.shape[-1])

    def encode_episodes(self, belief: str, slates: Tensor, clicks: Tensor) -> Tensor:
        """(K, E, T, S) slates and clicks → (K, E, T, state) beliefs from a zero state (`gru_unroll`)."""
        gates = self._gru_input(belief, slates, clicks)
        return gru_unroll(gates, self.tensors[f"{belief}.gru.weight_hh_l0"], self.tensors[f"{belief}.gru.bias_hh_l0"])

    def _belief_step(self, belief: str, h: Tensor | None, slates: Tensor, clicks: Tensor) -> Tensor:
        """One online step of nn.GRU's cell: (K, B, S) observations onto state h (zeros when None)."""
        gates_in = self._gru_input(belief, slates, clicks)
        if h is None:
            h = gates_in.new_zeros(*gates_in.shape[:2], self.params.belief_state_dim)
        gates_h = torch.baddbmm(*self._linear_operands(f"{belief}.gru.weight_hh_l0", f"{belief}.gru.bias_hh_l0", h))
        S = h.shape[-1]
        # r and z in one sigmoid, n = tanh(i_n + r·h_n) as one addcmul, n + z(h − n) as one lerp: few ops per step.
        rz = torch.sigmoid(gates_in[..., :2 * S] + gates_h[..., :2 * S])
        n = torch.tanh(torch.addcmul(gates_in[..., 2 * S:], rz[..., :S], gates_h[..., 2 * S:]))
        return torch.lerp(n, h, rz[..., S:])

    def _optimizer_step(self, name: str, loss: Tensor, backward: Callable[[Tensor], None]) -> None:
        """One step of optimizer `name` on the members' (K,) losses: their sum through `backward`."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        backward(loss.sum())
        optimizer.step()

    @torch.no_grad()
    def _polyak(self, net: str, tau: float, due: Tensor | None = None) -> None:
        """`<net>_target` ← τ·`net` + (1 − τ)·`<net>_target`, per element, so per member; with `due` (K,)
        only the members it marks (SlateQ: a member without an update keeps its target)."""
        names = [name for name in self.tensors if name.startswith(f"{net}.")]
        online = [self.tensors[name] for name in names]
        target = [self.tensors[name.replace(f"{net}.", f"{net}_target.", 1)] for name in names]
        if due is None or bool(due.all()):
            torch._foreach_lerp_(target, online, tau)
        elif bool(due.any()):
            for t, o in zip(target, online):
                t.lerp_(o, (due.to(t.dtype) * tau).view(-1, *([1] * (t.dim() - 1))))

    def _per_member(self, generators: list[torch.Generator], shape: tuple[int, ...],
                    fill: Callable[[Tensor, torch.Generator], None], dtype: torch.dtype = torch.float32) -> Tensor:
        """(K, *shape): member k's rows filled in place by `fill(rows, generators[k])` (`uniform_`, `normal_`,
        `random_`: as `torch.rand` / `randn` / `randint` draw) on the generators' device (the CPU), then
        moved to the agent's, so a run draws the same on every device."""
        out = torch.empty(len(generators), *shape, dtype=dtype, device=generators[0].device)
        for g, rows in zip(generators, out.unbind(0)):
            fill(rows, g)
        return out.to(self.device)

    def _random_slates(self, generators: list[torch.Generator], users: int) -> Tensor:
        """(K, B, slate) random-phase slates, member k's drawn as `randint(N, (B, slate))` (needs `num_items`)."""
        return self._per_member(generators, (users, self.slate_size),
                                lambda rows, g: rows.random_(0, self.num_items, generator=g), torch.int64)

    # -- acting: the online belief, (K, B, ·) -------------------------------------------------------
    @torch.no_grad()
    def begin_episodes(self, slates: Tensor, clicks: Tensor) -> None:
        self._hidden = None
        self.observe(slates, clicks)

    @torch.no_grad()
    def observe(self, slates: Tensor, clicks: Tensor) -> None:
        self._hidden = self._belief_step(self.online_belief, self._hidden, slates, clicks)

    def belief_state(self) -> Tensor:
        if self._hidden is None:
            raise RuntimeError("no online belief: call begin_episodes first")
        return self._hidden


class StackedSlatePicker(StackedAgent):
    """Base of the stacked agents that pick slates directly (SlateQ, REINFORCE; they set `num_items` and
    `slate_size`): raw actions (K, B, 0), random-phase slates `_random_slates`, the others `_pick_slates`."""

    @torch.no_grad()
    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        state = self.belief_state()
        K, B = state.shape[:2]
        if mode == "random":
            slates = self._random_slates(generators, B)
        elif mode in ("explore", "greedy"):
            slates = self._pick_slates(mode, state, generators, envs)
        else:
            raise ValueError(f"unknown act mode {mode!r}")
        return slates, torch.zeros(K, B, 0, device=state.device)

    def _pick_slates(self, mode: ActMode, state: Tensor, generators: list[torch.Generator],
                     envs: MemberEnvs | None) -> Tensor:
        """(K, B, slate) for mode "explore" or "greedy" from the online beliefs (K, B, S)."""
        raise NotImplementedError


def member_metrics(columns: dict[str, Tensor]) -> list[dict[str, float]]:
    """Per-member metrics ({name: (K,) tensor}) as one dict of floats per member, in one host transfer (not
    one wait for a GPU per value); stacking promotes mixed dtypes, so counts < 2²⁴ stay exact."""
    rows = torch.stack([c.detach() for c in columns.values()], dim=1).tolist()
    return [dict(zip(columns, row)) for row in rows]
