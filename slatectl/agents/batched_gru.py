"""The stacked agents' GRU unroll over whole episodes, with a hand-written backward.

`gru_unroll(gates_in, weight_hh, bias_hh)`: (K, E, T, 3S) input gates (computed by the caller for all steps
at once), (K, 3S, S) recurrent weights, (K, 3S) biases → (K, E, T, S) states h_1 … h_T from h_0 = 0 by
nn.GRU's cell (gates r, z, n in PyTorch's order), K members at once:

    g_h  = h_{t-1} W_hhᵀ + b_hh                   (one batched matmul per step, all members)
    r, z = σ(g_in[r, z] + g_h[r, z])
    n    = tanh(g_in[n] + r ⊙ g_h[n])
    h_t  = n + z ⊙ (h_{t-1} − n)                  (= (1 − z) ⊙ n + z ⊙ h_{t-1})

Why: each of the T = 101 steps is a few tiny ops, whose autograd graph costs twice the forward. Here the
forward is 5 ops per step (one matmul gives the r, z pre-activations and g_h[n]: input gates and b_hh are
added beforehand), the backward the chain rule written out, 6 ops per step, dh being ∂L/∂h_t:

    a_n  = dh ⊙ (1 − z) ⊙ (1 − n²)               (∂L/∂ pre-activation of n = ∂L/∂g_in[n])
    a_z  = dh ⊙ (h_{t-1} − n) ⊙ σ'(z)            (∂L/∂g_in[z] = ∂L/∂g_h[z])
    a_r  = a_n ⊙ g_h[n] ⊙ σ'(r)                  (∂L/∂g_in[r] = ∂L/∂g_h[r])
    ∂L/∂g_h[n] = a_n ⊙ r
    dh   ← ∂L/∂h_{t-1} (own output) + z ⊙ dh + (∂L/∂g_h) W_hh      (one addcmul, one baddbmm)

with the per-step factors (1 − z)(1 − n²), (h_{t-1} − n) σ'(z) and g_h[n] σ'(r) computed once for all
steps (σ' = σ(1 − σ)), and the weight gradients from all steps at once: ∂L/∂W_hh = Σ_t (∂L/∂g_h,t)ᵀ h_{t-1}
(one batched matmul), ∂L/∂b_hh = Σ_t ∂L/∂g_h,t. Buffers are time-major (T, K, E, ·): each step reads and
writes contiguous blocks. Values equal autograd's up to summation order (tests/test_batched_gru.py).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _GRUUnroll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates_in: Tensor, weight_hh: Tensor, bias_hh: Tensor) -> Tensor:
        K, E, T, G = gates_in.shape
        S = G // 3
        g_in = gates_in.permute(2, 0, 1, 3)  # (T, K, E, 3S), a view
        # What the step's matmul adds h_{t-1} W_hhᵀ to: [g_in[r, z] + b_hh[r, z], b_hh[n]], so that one
        # baddbmm gives the r, z pre-activations and g_h[n] at once.
        base = gates_in.new_empty(T, K, E, G)
        torch.add(g_in[..., :2 * S], bias_hh[None, :, None, :2 * S], out=base[..., :2 * S])
        base[..., 2 * S:] = bias_hh[None, :, None, 2 * S:]
        gates = gates_in.new_empty(T, K, E, G)  # [r, z (after the sigmoid), g_h[n]]
        hidden = gates_in.new_empty(T, K, E, S)
        n = gates_in.new_empty(T, K, E, S)
        w_t = weight_hh.transpose(1, 2)
        h = gates_in.new_zeros(K, E, S)
        # per-step views made once (indexing inside the loop costs as much as a small op)
        steps = zip(base.unbind(0), gates.unbind(0), gates[..., :2 * S].unbind(0), gates[..., :S].unbind(0),
                    gates[..., S:2 * S].unbind(0), gates[..., 2 * S:].unbind(0), g_in[..., 2 * S:].unbind(0),
                    n.unbind(0), hidden.unbind(0))
        for base_t, gates_t, rz_t, r_t, z_t, gh_n_t, gin_n_t, n_t, hidden_t in steps:
            torch.baddbmm(base_t, h, w_t, out=gates_t)
            rz_t.sigmoid_()
            torch.addcmul(gin_n_t, r_t, gh_n_t, out=n_t).tanh_()
            h = torch.lerp(n_t, h, z_t, out=hidden_t)
        ctx.save_for_backward(weight_hh, hidden, gates, n)
        return hidden.permute(1, 2, 0, 3)  # (K, E, T, S)

    @staticmethod
    def backward(ctx, grad_hidden: Tensor):
        weight_hh, hidden, gates, n = ctx.saved_tensors
        T, K, E, S = hidden.shape
        previous = torch.cat([hidden.new_zeros(1, K, E, S), hidden[:-1]])  # h_{t-1}
        r, z, gh_n = gates[..., :S], gates[..., S:2 * S], gates[..., 2 * S:]
        slope = gates[..., :2 * S] * (1 - gates[..., :2 * S])  # σ' of r and z
        n_factor = (1 - z) * (1 - n * n)  # ∂h/∂n · tanh'
        z_factor = (previous - n) * slope[..., S:]  # ∂h/∂z · σ'
        r_factor = gh_n * slope[..., :S]  # ∂(pre n)/∂r · σ'
        grad_out = grad_hidden.permute(2, 0, 1, 3)  # (T, K, E, S)
        grad_gh = hidden.new_empty(T, K, E, 3 * S)  # ∂L/∂g_h; its r, z part is also ∂L/∂g_in[r, z]
        grad_in_n = hidden.new_empty(T, K, E, S)  # ∂L/∂g_in[n]
        views = [t.unbind(0) for t in (grad_out, n_factor, z_factor, r_factor, r, z, grad_gh, grad_gh[..., :S],
                                       grad_gh[..., S:2 * S], grad_gh[..., 2 * S:], grad_in_n)]
        go, nf, zf, rf, r_, z_, ggh, ggh_r, ggh_z, ggh_n, gin_n = views
        dh = go[T - 1]
        for t in range(T - 1, -1, -1):
            a_n = torch.mul(dh, nf[t], out=gin_n[t])
            torch.mul(dh, zf[t], out=ggh_z[t])
            torch.mul(a_n, rf[t], out=ggh_r[t])
            torch.mul(a_n, r_[t], out=ggh_n[t])
            if t:  # the carry into step t − 1, plus that step's own output gradient
                dh = torch.baddbmm(torch.addcmul(go[t - 1], z_[t], dh), ggh[t], weight_hh)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            rows = grad_gh.transpose(0, 1).reshape(K, T * E, 3 * S)
            grad_weight = torch.bmm(rows.transpose(1, 2), previous.transpose(0, 1).reshape(K, T * E, S))
        grad_gates_in = None
        if ctx.needs_input_grad[0]:
            grad_gates_in = torch.cat([grad_gh[..., :2 * S], grad_in_n], dim=-1).permute(1, 2, 0, 3)
        return grad_gates_in, grad_weight, grad_gh.sum(dim=(0, 2)) if ctx.needs_input_grad[2] else None


gru_unroll = _GRUUnroll.apply
