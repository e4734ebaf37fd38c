"""`gru_unroll` (slatectl/agents/batched_gru.py): its hand-written backward against autograd, and its
values against PyTorch's own nn.GRU, member by member."""

from __future__ import annotations

import torch
from torch import nn

from slatectl.agents.batched_gru import gru_unroll

K, E, T, S = 3, 4, 9, 5


def _inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    gates_in = torch.randn(K, E, T, 3 * S, generator=g, dtype=dtype)
    weight_hh = torch.randn(K, 3 * S, S, generator=g, dtype=dtype) / S ** 0.5
    bias_hh = torch.randn(K, 3 * S, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (gates_in, weight_hh, bias_hh)]


def test_gru_unroll_gradients_match_finite_differences():
    assert torch.autograd.gradcheck(gru_unroll, _inputs(), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gru_unroll_is_nn_gru_of_each_member_values_and_gradients():
    """nn.GRU with an identity input weight and no input bias reads the input gates as given."""
    gates_in, weight_hh, bias_hh = _inputs(torch.float32, seed=1)
    probe = torch.randn(K, E, T, S, generator=torch.Generator().manual_seed(2))
    hidden = gru_unroll(gates_in, weight_hh, bias_hh)
    (hidden * probe).sum().backward()
    for k in range(K):
        gru = nn.GRU(3 * S, S, batch_first=True)
        with torch.no_grad():
            gru.weight_ih_l0.copy_(torch.eye(3 * S))
            gru.bias_ih_l0.zero_()
            gru.weight_hh_l0.copy_(weight_hh[k])
            gru.bias_hh_l0.copy_(bias_hh[k])
        member_gates = gates_in[k].detach().clone().requires_grad_()
        expected, _ = gru(member_gates)
        (expected * probe[k]).sum().backward()
        torch.testing.assert_close(hidden[k], expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(gates_in.grad[k], member_gates.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weight_hh.grad[k], gru.weight_hh_l0.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bias_hh.grad[k], gru.bias_hh_l0.grad, atol=1e-5, rtol=1e-5)


def test_gru_unroll_without_gradients_needed_returns_the_states_only():
    gates_in, weight_hh, bias_hh = (t.detach() for t in _inputs())
    with torch.no_grad():
        hidden = gru_unroll(gates_in, weight_hh, bias_hh)
    assert hidden.shape == (K, E, T, S) and not hidden.requires_grad
    # the first state from h_0 = 0 by hand: g_h = b_hh
    r_z = torch.sigmoid(gates_in[:, :, 0, :2 * S] + bias_hh[:, None, :2 * S])
    n = torch.tanh(gates_in[:, :, 0, 2 * S:] + r_z[..., :S] * bias_hh[:, None, 2 * S:])
    torch.testing.assert_close(hidden[:, :, 0], (1 - r_z[..., S:]) * n)
