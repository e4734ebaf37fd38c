"""REINFORCE+SoftMax for a population of K runs: the members' policies and beliefs stacked.

The member state dicts (`belief.*`, `policy.*`) are stacked along a leading member dimension
(`StackedAgent`); one Adam over the stacked tensors is the K members' Adams (they all update at every
step: REINFORCE trains from the first episode).

Member k reproduces the solo `ReinforceSoftmax` with its env and seed: acting draws from member k's
generator what the solo agent draws from the global RNG, in the same order and shapes — `randint(N, (B,
slate))` per random-phase step, `multinomial(π (B, N), slate, replacement=True)` per exploring step (the
members' policies are evaluated stacked, then each member samples its own rows); the update is the solo
loss per member (a sum over the episode's clicked steps, a mean over the batch's episodes), summed over
members.
"""

from __future__ import annotations

import torch
from torch import Tensor

from slatectl.agents.base import ActMode, EpisodeBatch, default_backward
from slatectl.agents.nets import first_click_index
from slatectl.agents.reinforce import ReinforceSoftmax, discounted_returns
from slatectl.agents.spec import register_population
from slatectl.agents.stacked import StackedSlatePicker, member_metrics
from slatectl.sim.member_envs import MemberEnvs


class StackedReinforce(StackedSlatePicker):
    nets = ("policy",)
    online_belief = "belief"

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

    def update(self, batch: EpisodeBatch, generators: list[torch.Generator],
               backward=default_backward) -> list[dict[str, float]]:
        """ReinforceSoftmax.update of every member on its own batch (fields with a leading K dimension)."""
        K, E, H = batch.rewards.shape
        returns = discounted_returns(batch.rewards.reshape(K * E, H), self.params.gamma).view(K, E, H)
        states = self.encode_episodes("belief", batch.slates, batch.clicks)  # (K, E, H+1, S)
        if self.params.pair_state_with_shown_clicks:
            slates, clicks = batch.slates[:, :, :H], batch.clicks[:, :, :H]
        else:
            slates, clicks = batch.slates[:, :, 1:], batch.clicks[:, :, 1:]
        rank, has_click = first_click_index(clicks)  # (K, E, H)
        items = slates.gather(3, rank[..., None]).squeeze(3)
        logits = self._sequential("policy", states[:, :, :H].reshape(K, E * H, -1)).view(K, E, H, -1)
        log_pi = torch.log_softmax(logits, dim=-1).gather(3, items[..., None]).squeeze(3)
        # 1 − (1 − π)^K as −expm1(K·log1p(−π)), as ReinforceSoftmax.clicked_item_log_terms
        hit = -torch.expm1(self.slate_size * torch.log1p(-log_pi.exp().clamp(max=1.0 - 1e-7)))
        log_terms = torch.log(hit + 1e-6)
        loss = -(returns * log_terms * has_click.to(log_terms.dtype)).sum(dim=2).mean(dim=1)  # (K,)
        optimizer = self.optimizers["policy"]
        optimizer.zero_grad(set_to_none=True)
        backward(loss.sum())
        optimizer.step()
        episode_returns = batch.rewards.sum(dim=2).mean(dim=1)
        clicked = has_click.sum(dim=(1, 2)).to(loss.dtype)
        return member_metrics({"loss": loss, "return": episode_returns, "clicked_steps": clicked})


register_population("reinforce-softmax", StackedReinforce)
