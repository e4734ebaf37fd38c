"""SAC's two critics (Q1, Q2, or their targets) evaluated as one pair, for K stacked members.

`StackedSAC._q_pair` (slatectl/agents/sac.py) runs both critics' MLPs in one pass per layer: the first
layers, which read the same input [s, a], side by side (output 2·hidden); later hidden layers
block-diagonally; the output layers (one value per critic) on their own halves of the hidden units.
This module holds those layers.

Two of them have a hand-written backward, because the kernels autograd picks for these shapes are slow
on a CPU (measured with (2 members, 2,000 transitions, 2·256 hidden units), 2 threads):

- `input_layer`: [s, a, 1] @ Wᵀ (bias folded in against the column of ones). Each update needs the input
  gradient of only one part: ∂L/∂s in the critic step (the critic belief learns through it, the replayed
  actions are data) and ∂L/∂a in the actor step (the states are detached there). Autograd through one
  matmul over the concatenated input computes all 53 columns (1.8 ms); the part needed alone is one
  matmul with the matching columns of W (0.8 ms).
- `output_layer`: q_j = h_j · w_j + b_j on each critic's half h_j of the hidden units. Autograd's
  backward through the block-diagonal matmul has 2 output columns: ∂L/∂W as hᵀ·g (512 × 2) takes 2.5 ms
  against 0.22 ms as gᵀ·h (2 × 512); ∂L/∂h as g·W 0.87 ms against the broadcast product g ⊗ w 0.55 ms.

Values equal autograd's through the same forward up to summation order
(tests/test_sac_population_kernels.py checks both against finite differences).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _InputLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states: Tensor, actions: Tensor, weight: Tensor) -> Tensor:
        x = torch.cat([states, actions, states.new_ones(*states.shape[:-1], 1)], dim=-1)
        ctx.save_for_backward(x, weight)
        ctx.state_dim = states.shape[-1]
        return torch.bmm(x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        S = ctx.state_dim
        grad_states = grad_actions = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_states = torch.bmm(grad, weight[:, :, :S])
        if ctx.needs_input_grad[1]:
            grad_actions = torch.bmm(grad, weight[:, :, S:-1])
        if ctx.needs_input_grad[2]:
            grad_weight = torch.bmm(x.transpose(1, 2), grad).transpose(1, 2)
        return grad_states, grad_actions, grad_weight


class _OutputLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(hidden, weight)
        rows = block_diagonal(weight[:, :1], weight[:, 1:]).transpose(1, 2)  # (K, 2, 2H)
        return torch.baddbmm(bias.unsqueeze(-1), rows, hidden.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_q: Tensor):
        hidden, weight = ctx.saved_tensors
        K, M, _ = grad_q.shape
        H = weight.shape[-1]
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (grad_q.unsqueeze(-1) * weight.unsqueeze(1)).view(K, M, 2 * H)
        if ctx.needs_input_grad[1]:
            both = torch.bmm(grad_q.transpose(1, 2), hidden)  # (K, 2, 2H): each critic's row, both halves
            grad_weight = torch.stack([both[:, 0, :H], both[:, 1, H:]], dim=1)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_q.sum(dim=1)
        return grad_hidden, grad_weight, grad_bias


def input_layer(states: Tensor, actions: Tensor, weight: Tensor) -> Tensor:
    """states (K, M, S), actions (K, M, A), weight (K, out, S + A + 1) with the bias as last column →
    [s, a, 1] @ weightᵀ (K, M, out): both critics' first layers side by side."""
    return _InputLayer.apply(states, actions, weight)


def output_layer(hidden: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """hidden (K, M, 2H) of both critics side by side, weight (K, 2, H), bias (K, 2) → (K, M, 2) with
    q[..., j] = hidden[..., jH:(j+1)H] · weight[:, j] + bias[:, j]."""
    return _OutputLayer.apply(hidden, weight, bias)


def block_diagonal(wa: Tensor, wb: Tensor) -> Tensor:
    """Two stacked Linear weights (K, out, in) → (K, 2·in, 2·out): [[waᵀ, 0], [0, wbᵀ]] for x @ W."""
    K, out, inp = wa.shape
    zeros = wa.new_zeros(K, inp, out)
    return torch.cat([torch.cat([wa.transpose(1, 2), zeros], dim=2),
                      torch.cat([zeros, wb.transpose(1, 2)], dim=2)], dim=1)
