"""REINFORCE+SoftMax (`REINFORCESlate` of the reference; Williams 1992), notes §7.6. On-policy.

Policy: s_a (actor GRU belief, 20) → hidden_pinet (256) → ReLU → N (1000) logits → softmax π(·|s).
- "explore" (training): the slate is K = 10 i.i.d. draws from π (with replacement, duplicates possible);
- "greedy" (evaluation): the K most probable items, sorted;
- "random" (the loop's random phase): K i.i.d. uniform items.
The agent trains from the very first episode (`updates_during_random_phase = True`, as the reference:
only SAC/SlateQ skip updates during the random phase) on its replay of `capacity` 1 episode with
`batch_size` 1: each update uses the latest episode only.

Loss per episode, summed over its steps whose clicked slate has a click (averaged over the episodes of a
batch, which is the plain sum for the reference's batch of 1):
    −Σ_t G_t · log(1 − (1 − π(j_t | s_t))^K + 1e-6),
j_t = the first clicked item, 1 − (1 − π)^K = the probability that K i.i.d. draws contain j_t,
G_t = Σ_{k ≥ t} γ^{k−t} r_k the discounted (γ = 0.8) return-to-go from step t. No baseline, no entropy
term. Adam `pi_lr` (3e-3) over the policy MLP and the actor belief.

Reference quirks — what we do:
(a) Off-by-one pairing: the reference pairs state s_t (which already contains o_t) with the first click
    of o_t, i.e. an item drawn by the policy at s_{t−1}, weighted by the return-to-go G_t of a_t.
    **Not reproduced by default** (`pair_state_with_shown_clicks: false`: j_t is the first click of
    o_{t+1}, the slate drawn at s_t): clearly a bug (the log-probability is not that of the action the
    return is credited to). `true` reproduces it.
(b) No baseline, training during the random phase on random-slate episodes (whose items were not drawn
    from π — the update is then not a policy gradient): kept, it is the published baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.agents.base import ActMode, Backward, EpisodeBatch, SingleBeliefAgent, default_backward
from slatectl.agents.belief import GRUBelief
from slatectl.agents.nets import check_params, common_checks, first_click_index, mlp, random_slates, read_metrics
from slatectl.agents.pretrained import AgentInputs
from slatectl.agents.spec import AgentSpec, register_agent
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
             f"REINFORCE is on-policy: capacity must equal batch_size so every update uses only the latest "
             f"episodes (got capacity {self.capacity}, batch_size {self.batch_size}; the reference uses 1 and 1)"),
        ])


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """(E, H) rewards → (E, H) G_t = Σ_{k ≥ t} γ^{k−t} r_k (one matmul with an upper-triangular matrix)."""
    H = rewards.shape[1]
    steps = torch.arange(H, device=rewards.device, dtype=rewards.dtype)
    power = steps[:, None] - steps[None, :]  # [k, t] = k − t
    weights = torch.where(power >= 0, gamma ** power.clamp(min=0), torch.zeros_like(power))
    return rewards @ weights


class ReinforceSoftmax(SingleBeliefAgent):
    updates_during_random_phase = True

    def __init__(self, params: ReinforceParams, num_items: int, slate_size: int):
        super().__init__()
        self.params = params
        self.num_items, self.slate_size = num_items, slate_size
        self.action_dim = 0
        self.belief = GRUBelief(num_items, params.item_embedd_dim, slate_size, params.belief_state_dim)
        self.policy = mlp(params.belief_state_dim, params.hidden_pinet, num_items)
        self.optimizer = torch.optim.Adam([*self.policy.parameters(), *self.belief.parameters()], lr=params.pi_lr)

    @torch.no_grad()
    def act(self, env: TopicRec, mode: ActMode) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.belief.state
        B = state.shape[0]
        empty = torch.zeros(B, 0, device=state.device)
        if mode == "random":
            return random_slates(B, self.num_items, self.slate_size, state.device), empty
        logits = self.policy(state)
        if mode == "explore":
            slates = torch.multinomial(torch.softmax(logits, dim=1), self.slate_size, replacement=True)
        elif mode == "greedy":
            slates = logits.topk(self.slate_size, dim=1).indices
        else:
            raise ValueError(f"unknown act mode {mode!r}")
        return slates, empty

    def clicked_item_log_terms(self, batch: EpisodeBatch, states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, H) log(1 − (1 − π(j_t|s_t))^K + 1e-6) and the (E, H) mask of steps with a click."""
        H = batch.rewards.shape[1]
        if states is None:
            states = self.belief.encode_episodes(batch.slates, batch.clicks)
        if self.params.pair_state_with_shown_clicks:
            slates, clicks = batch.slates[:, :H], batch.clicks[:, :H]
        else:
            slates, clicks = batch.slates[:, 1:], batch.clicks[:, 1:]
        rank, has_click = first_click_index(clicks)
        items = slates.gather(2, rank[..., None]).squeeze(2)  # (E, H)
        log_pi = torch.log_softmax(self.policy(states[:, :H]), dim=-1).gather(2, items[..., None]).squeeze(2)
        # 1 − (1 − π)^K computed as −expm1(K·log1p(−π)) (same value, no cancellation for small π).
        hit = -torch.expm1(self.slate_size * torch.log1p(-log_pi.exp().clamp(max=1.0 - 1e-7)))
        return torch.log(hit + 1e-6), has_click

    def update(self, batch: EpisodeBatch, backward: Backward = default_backward) -> dict[str, float]:
        returns = discounted_returns(batch.rewards, self.params.gamma)
        log_terms, has_click = self.clicked_item_log_terms(batch)
        loss = -(returns * log_terms * has_click.to(log_terms.dtype)).sum(dim=1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        backward(loss)
        self.optimizer.step()
        return read_metrics({"loss": loss.detach(), "return": batch.rewards.sum(dim=1).mean(),
                             "clicked_steps": has_click.sum()})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.optimizer}


def build_reinforce(params: ReinforceParams, env: TopicRec, inputs: AgentInputs) -> ReinforceSoftmax:
    return ReinforceSoftmax(params, env.config.num_items, env.config.slate_size)


register_agent(AgentSpec("reinforce-softmax", "REINFORCE+SoftMax", ReinforceParams, build_reinforce))
