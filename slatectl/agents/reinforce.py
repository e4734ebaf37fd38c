"""REINFORCE+SoftMax (`REINFORCESlate` of the reference; Williams 1992), notes §7.6. On-policy.

Policy: s_a (actor GRU belief, 20) → hidden_pinet (256) → ReLU → N (1000) logits → softmax π(·|s).
- "explore" (training): the slate is K = 10 i.i.d. draws from π (with replacement, duplicates possible);
- "greedy" (evaluation): the K most probable items, sorted;
- "random" (the loop's random phase): K i.i.d. uniform items.
It trains from the first episode (`updates_during_random_phase`; quirk b) on the latest episode only
(`capacity` = `batch_size` = 1).

Loss per episode, summed over its steps whose clicked slate has a click (averaged over the episodes of a
batch, which is the plain sum for the reference's batch of 1):
    −Σ_t G_t · log(1 − (1 − π(j_t | s_t))^K + 1e-6),
j_t = the first clicked item, 1 − (1 − π)^K = the probability that K i.i.d. draws contain j_t,
G_t = Σ_{k ≥ t} γ^{k−t} r_k the discounted (γ = 0.8) return-to-go from step t. No baseline, no entropy
term. Adam `pi_lr` (3e-3) over the policy MLP and the actor belief.

Reference quirks — what we do:
(a) Off-by-one pairing: the reference pairs s_t (which already contains o_t) with the first click of
    o_t, an item drawn at s_{t−1}, weighted by the return-to-go G_t of a_t: clearly a bug (the
    log-probability is not that of the action the return is credited to), **not reproduced by default**
    (`pair_state_with_shown_clicks: false`: j_t is the first click of o_{t+1}, the slate drawn at s_t);
    `true` reproduces it.
(b) No baseline, training during the random phase on random-slate episodes (whose items were not drawn
    from π — the update is then not a policy gradient): kept, it is the published baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slatectl.agents.base import ActMode, Agent, EpisodeBatch, default_backward
from slatectl.agents.belief import GRUBelief
from slatectl.agents.nets import common_checks, mlp
from slatectl.agents.pretrained import AgentInputs
from slatectl.agents.spec import AgentSpec, register_agent
from slatectl.agents.stacked import StackedSlatePicker, member_metrics
from slatectl.config_tools import check_params
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec


@dataclass(frozen=True)
class ReinforceParams:
    capacity: int = 1
    batch_size: int = 1
    gamma: float = 0.8
    pi_lr: float = 0.003
    hidden_pinet: tuple[int, ...] = (256,)
    belief_state_dim: int = 20
    item_embedd_dim: int = 20
    pair_state_with_shown_clicks: bool = False  # quirk (a): true = reference bug

    def validate(self) -> None:
        check_params("agent", common_checks(self) + [
            (self.capacity == self.batch_size,
             f"REINFORCE is on-policy: agent.capacity must equal agent.batch_size so every update uses only the latest "
             f"episodes (got capacity {self.capacity}, batch_size {self.batch_size}; the reference uses 1 and 1)"),
        ])


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """(…, H) rewards → (…, H) G_t = Σ_{k ≥ t} γ^{k−t} r_k (one matmul with an upper-triangular matrix)."""
    H = rewards.shape[-1]
    steps = torch.arange(H, device=rewards.device, dtype=rewards.dtype)
    power = steps[:, None] - steps[None, :]  # [k, t] = k − t
    weights = torch.where(power >= 0, gamma ** power.clamp(min=0), torch.zeros_like(power))
    return rewards @ weights


class ReinforceSoftmax(Agent):
    """A member's layout (see `Agent`)."""

    updates_during_random_phase = True

    def __init__(self, params: ReinforceParams, num_items: int, slate_size: int):
        super().__init__()
        self.params = params
        self.num_items, self.slate_size = num_items, slate_size
        self.belief = GRUBelief(num_items, params.item_embedd_dim, slate_size, params.belief_state_dim)
        self.policy = mlp(params.belief_state_dim, params.hidden_pinet, num_items)
        self._optimizers = {
            "policy": torch.optim.Adam([*self.policy.parameters(), *self.belief.parameters()], lr=params.pi_lr)}


class StackedReinforce(StackedSlatePicker):
    """K REINFORCE members stacked (the module doc): sampling from π and the update of the sum of their losses
    (its stacked state and per-member draws: docs/population.md, "REINFORCE")."""

    nets = ("policy",)

    def __init__(self, members: list[ReinforceSoftmax]):
        super().__init__(members)
        self.num_items, self.slate_size = members[0].num_items, members[0].slate_size

    def _pick_slates(self, mode: ActMode, state: Tensor, generators: list[torch.Generator],
                     envs: MemberEnvs | None) -> Tensor:
        logits = self._sequential("policy", state)  # (K, B, N)
        if mode == "greedy":
            return logits.topk(self.slate_size, dim=-1).indices
        probs = torch.softmax(logits, dim=-1)
        return torch.stack([torch.multinomial(probs[k].to(g.device), self.slate_size, replacement=True,
                                              generator=g) for k, g in enumerate(generators)]).to(state.device)

    def clicked_item_log_terms(self, batch: EpisodeBatch) -> tuple[Tensor, Tensor]:
        """(K, E, H) log(1 − (1 − π(j_t|s_t))^slate + 1e-6) and the (K, E, H) mask of steps with a click,
        j_t the first clicked item of the slate paired with s_t (quirk (a))."""
        K, E, H = batch.rewards.shape
        states = self.encode_episodes("belief", batch.slates, batch.clicks)  # (K, E, H+1, S)
        items, has_click = batch.first_clicks(self.params.pair_state_with_shown_clicks)  # (K, E, H)
        logits = self._sequential("policy", states[:, :, :H].reshape(K, E * H, -1)).view(K, E, H, -1)
        log_pi = torch.log_softmax(logits, dim=-1).gather(3, items[..., None]).squeeze(3)
        # 1 − (1 − π)^K computed as −expm1(K·log1p(−π)) (same value, no cancellation for small π).
        hit = -torch.expm1(self.slate_size * torch.log1p(-log_pi.exp().clamp(max=1.0 - 1e-7)))
        return torch.log(hit + 1e-6), has_click

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        returns = discounted_returns(batch.rewards, self.params.gamma)
        log_terms, has_click = self.clicked_item_log_terms(batch)
        loss = -(returns * log_terms * has_click.to(log_terms.dtype)).sum(dim=2).mean(dim=1)  # (K,)
        self._optimizer_step("policy", loss, backward)
        episode_returns = batch.rewards.sum(dim=2).mean(dim=1)
        clicked = has_click.sum(dim=(1, 2)).to(loss.dtype)
        return member_metrics({"loss": loss, "return": episode_returns, "clicked_steps": clicked})


def build_reinforce(params: ReinforceParams, env: TopicRec, inputs: AgentInputs) -> ReinforceSoftmax:
    return ReinforceSoftmax(params, env.config.num_items, env.config.slate_size)


register_agent(AgentSpec("reinforce-softmax", "REINFORCE+SoftMax", ReinforceParams, build_reinforce,
                         population=StackedReinforce))
