"""The layers of SAC's two critics evaluated as one pair for K stacked members (`StackedSAC._q_pair`), with
a hand-written backward: autograd's kernels for these shapes are slow on a CPU (BENCHMARKS.md, "Kernel notes:
stacked agents and SAC"). Values equal autograd's up to summation order (tests/test_sac_population_kernels.py
checks both against finite differences).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _InputLayer(torch.autograd.Function):
    """states (K, M, S), actions (K, M, A), weight (K, out, S + A + 1) with the bias as last column →
    [s, a, 1] @ weightᵀ (K, M, out). Backward computes only the input gradient an update needs, one matmul
    with W's matching columns: ∂L/∂s in the critic step (the replayed actions are data), ∂L/∂a in the actor's."""

    @staticmethod
    def forward(ctx, states: Tensor, actions: Tensor, weight: Tensor) -> Tensor:
        x = torch.cat([states, actions, states.new_ones(*states.shape[:-1], 1)], dim=-1)
        ctx.save_for_backward(x, weight)
        ctx.state_dim = states.shape[-1]
        return torch.bmm(x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        S, needs = ctx.state_dim, ctx.needs_input_grad
        return (torch.bmm(grad, weight[:, :, :S]) if needs[0] else None,
                torch.bmm(grad, weight[:, :, S:-1]) if needs[1] else None,
                torch.bmm(x.transpose(1, 2), grad).transpose(1, 2) if needs[2] else None)


class _OutputLayer(torch.autograd.Function):
    """hidden (K, M, 2H) of both critics side by side, weight (K, 2, H), bias (K, 2) → (K, M, 2) with
    q[..., j] = hidden[..., jH:(j+1)H] · weight[:, j] + bias[:, j]. Backward: ∂L/∂W as gᵀ·h (2 rows)
    rather than autograd's hᵀ·g (2 columns), ∂L/∂h as the broadcast product g ⊗ w."""

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
        needs, grad_weight = ctx.needs_input_grad, None
        if needs[1]:
            both = torch.bmm(grad_q.transpose(1, 2), hidden)  # (K, 2, 2H): each critic's row, both halves
            grad_weight = torch.stack([both[:, 0, :H], both[:, 1, H:]], dim=1)
        grad_hidden = (grad_q.unsqueeze(-1) * weight.unsqueeze(1)).view(K, M, 2 * H) if needs[0] else None
        return grad_hidden, grad_weight, grad_q.sum(dim=1) if needs[2] else None


input_layer = _InputLayer.apply
output_layer = _OutputLayer.apply


def block_diagonal(wa: Tensor, wb: Tensor) -> Tensor:
    """Two stacked Linear weights (K, out, in) → (K, 2·in, 2·out): [[waᵀ, 0], [0, wbᵀ]] for x @ W."""
    K, out, inp = wa.shape
    zeros = wa.new_zeros(K, inp, out)
    return torch.cat([torch.cat([wa.transpose(1, 2), zeros], dim=2),
                      torch.cat([zeros, wb.transpose(1, 2)], dim=2)], dim=1)
