"""What the population loop needs from a stacked agent, and the pieces every stacked agent shares.

A stacked agent holds the K members of a population of one agent type with every tensor of the member
state dicts stacked along a leading member dimension under the same key (`belief.gru.weight_ih_l0` →
(K, 60, 210), `q.0.weight` → (K, 256, 20), …). The population loop (`slatectl.train.population`) talks
to it through `StackedAgent`'s public methods only:

- `set_step(step)`, `train()`, `eval()`: as the solo agent contract (`slatectl.agents.base`);
- `begin_episodes(slates, clicks)`, `observe(slates, clicks)`, `belief_state()`: the online belief of
  all members, observations (K, B, slate);
- `act(mode, generators, envs)` → (slates (K, B, slate), raw actions (K, B, A)): member k draws its
  randomness from `generators[k]` in the order and shapes its solo agent draws from the global RNG;
  `envs` (the population's `MemberEnvs`) is there for privileged agents (SlateQ reads relevances);
- `update(batch, generators, backward)` → one metrics dict per member: one update of every member on
  its own batch (fields with a leading K dimension);
- `member_state_dict(k)` / `load_member_state_dict(k, state)`, `member_optimizer_states(k)` /
  `load_optimizer_states(states)`: member k as an ordinary solo state dict and solo optimizer states
  (checkpoints and resume states are those of solo runs); `to(device)`.

Why one update of the stack is K solo updates: each loss is the sum over members of the member's own
solo loss, member k's loss depends only on slice k of the stacked tensors (so the gradient of the sum
w.r.t. slice k is member k's gradient), and Adam is elementwise with a step count shared by members that
update together (docs/population.md).

Shared pieces: building the stacked tensors and the optimizers over them from the K solo agents (which
stay as the layout: keys, optimizer membership and order), the member views, an MLP of Linear/ReLU
layers as batched matmuls (`_sequential`), and the GRU belief (`GRUBelief`) as batched ops: item
lookup in the K tables laid end to end, the input projection of all steps as one `baddbmm`, then
nn.GRU's cell (gates r, z, n) per step for all members.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, default_backward
from slatectl.sim.member_envs import MemberEnvs


class StackedAgent:
    """Base of the stacked agents: K solo agents of one class and hyper-parameters, stacked."""

    #: Prefixes of the members' nn.Sequential MLPs that `_sequential` evaluates stacked.
    nets: tuple[str, ...] = ()
    #: The member's GRU belief that runs online while acting.
    online_belief: str = "belief"

    def __init__(self, members: list[Agent]):
        if not members:
            raise ValueError("a population needs at least one member")
        reference = members[0]
        for m in members:
            if type(m) is not type(reference) or m.params != reference.params:
                raise ValueError(f"{type(self).__name__} stacks agents of one class with equal hyper-parameters")
        self.members = members
        self.K = len(members)
        self.params = reference.params
        self.action_dim = reference.action_dim
        self.updates_during_random_phase = reference.updates_during_random_phase
        states = [m.state_dict() for m in members]
        self.device = next(iter(states[0].values())).device
        self.tensors: dict[str, Tensor] = {
            name: torch.stack([s[name].detach() for s in states]).clone() for name in states[0]}
        name_of = {id(p): n for n, p in reference.named_parameters()}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for opt_name, optimizer in reference.optimizers().items():
            if len(optimizer.param_groups) != 1:
                raise ValueError("stacked optimizers support one parameter group")
            group = optimizer.param_groups[0]
            names = [name_of[id(p)] for p in group["params"]]
            for n in names:
                self.tensors[n].requires_grad_(True)
            hyper = {k: v for k, v in group.items() if k != "params"}
            self.optimizers[opt_name] = type(optimizer)([self.tensors[n] for n in names], **hyper)
        self._layers = {prefix: list(reference.get_submodule(prefix)) for prefix in self.nets}
        self._hidden: Tensor | None = None

    # -- the loop's contract -----------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The training step of every member (they move in lockstep); agents with a schedule override."""

    def train(self) -> None:
        pass  # no dropout / batch norm in the agents: train and eval modes are the same computation

    def eval(self) -> None:
        pass

    def act(self, mode: ActMode, generators: list[torch.Generator],
            envs: MemberEnvs | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward: Callable[[Tensor], None] = default_backward) -> list[dict[str, float]]:
        raise NotImplementedError

    # -- member views ------------------------------------------------------------------------------
    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's weights as an ordinary solo state dict (on CPU)."""
        return {name: t[k].detach().to("cpu").clone() for name, t in self.tensors.items()}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        different = set(self.tensors) ^ set(state)
        if different:
            raise KeyError(f"member state does not match the agent: {sorted(different)[:5]}")
        for name, t in self.tensors.items():
            t[k].copy_(state[name].to(t.device, t.dtype))

    def member_optimizer_states(self, k: int) -> dict[str, dict]:
        """Member k's optimizer states in the solo agent's format (same parameter order; shared `step`)."""
        out = {}
        for name, optimizer in self.optimizers.items():
            full = optimizer.state_dict()
            out[name] = {"state": {i: {key: (v if key == "step" else v[k]).detach().to("cpu").clone()
                                       for key, v in s.items()} for i, s in full["state"].items()},
                         "param_groups": full["param_groups"]}
        return out

    def load_optimizer_states(self, member_states: list[dict[str, dict]]) -> None:
        """Restore from K solo-format optimizer states (all members at the same update count)."""
        for name, optimizer in self.optimizers.items():
            per_member = [s[name] for s in member_states]
            state = {}
            for i, first in per_member[0]["state"].items():
                state[i] = {key: v.clone() if key == "step" else torch.stack([m["state"][i][key] for m in per_member])
                            for key, v in first.items()}
            optimizer.load_state_dict({"state": state, "param_groups": per_member[0]["param_groups"]})

    def to(self, device: torch.device | str) -> "StackedAgent":
        """Move the stacked tensors (they stay the optimizers' parameters); call before any update."""
        device = torch.device(device)
        if device != self.device:
            with torch.no_grad():
                for t in self.tensors.values():
                    t.data = t.data.to(device)
            self.device = device
        return self

    # -- batched building blocks -------------------------------------------------------------------
    def _sequential(self, prefix: str, x: Tensor) -> Tensor:
        """A member nn.Sequential of Linear/ReLU layers per member: x (K, M, in) → (K, M, out)."""
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

    @staticmethod
    def _per_member(generators: list[torch.Generator], draw: Callable[[torch.Generator], Tensor],
                    device: torch.device) -> Tensor:
        """(K, …) member k's draw from generator k (on the generator's device, then moved: a CUDA member
        does not reproduce a solo CUDA run's draws, which come from the CUDA generator)."""
        return torch.stack([draw(g) for g in generators]).to(device)

    # -- acting: the online belief, (K, B, ·) -------------------------------------------------------
    @torch.no_grad()
    def begin_episodes(self, slates: Tensor, clicks: Tensor) -> None:
        self._hidden = None
        self.observe(slates, clicks)

    @torch.no_grad()
    def observe(self, slates: Tensor, clicks: Tensor) -> None:
        belief = self.online_belief
        gates = self._gru_input(belief, self._features(belief, slates, clicks))
        h = self._hidden
        if h is None:
            h = gates.new_zeros(*gates.shape[:2], self.params.belief_state_dim)
        self._hidden = self._gru_cell(belief, gates, h)

    def belief_state(self) -> Tensor:
        if self._hidden is None:
            raise RuntimeError("no online belief: call begin_episodes first")
        return self._hidden
