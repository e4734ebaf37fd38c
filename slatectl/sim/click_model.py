"""The position-based click model of TopicRec: relevance, examination propensities, diversity penalty.

Pure functions over tensors so they can be property-tested against the spec's formulas. This is the one
click model of the project: the simulator and SlateQ's privileged training target both call it. Every
function computes on the device of its tensor inputs (`device` picks it for `examination_propensities`,
which has none).
"""

from __future__ import annotations

import torch


def examination_propensities(click_model: str, slate_size: int, decay: float = 0.85,
                             device: torch.device | str = "cpu") -> torch.Tensor:
    """E_r for 0-based rank r: tdPBM 0.85^r; mixPBM 0.5·0.85^r + 0.5·0.85^(K−1−r)."""
    # Computed on the CPU (so every device gets the same float32 values), then moved.
    ranks = torch.arange(slate_size, dtype=torch.float64, device="cpu")
    top_down = decay**ranks
    if click_model == "tdPBM":
        return top_down.float().to(device)
    if click_model == "mixPBM":
        return (0.5 * top_down + 0.5 * decay ** (slate_size - 1 - ranks)).float().to(device)
    raise ValueError(f"unknown click model {click_model!r}")


def relevance(scores: torch.Tensor, offset: float, slope: float) -> torch.Tensor:
    """ρ = σ(slope·(score − offset)); with slope 100 relevance is nearly a step at the offset."""
    return torch.sigmoid(slope * (scores - offset))


def diversity_penalty_factor(slate_topics: torch.Tensor, num_topics: int, threshold: int, penalty: float) -> torch.Tensor:
    """(B,) divisor of every relevance in the slate: `penalty` when some topic occurs ≥ threshold times."""
    device = slate_topics.device
    counts = torch.zeros(slate_topics.shape[0], num_topics, dtype=torch.int64, device=device)
    counts.scatter_add_(1, slate_topics, torch.ones_like(slate_topics))
    crowded = counts.max(dim=1).values >= threshold
    # Python scalars, not `torch.tensor(x, device=...)`: that is a synchronous host-to-device copy, which
    # a CUDA graph capture (training's captured episodes) refuses. Same float32 values.
    return torch.where(crowded, float(penalty), 1.0)


def click_probabilities(
    slate_relevance: torch.Tensor, slate_topics: torch.Tensor, propensities: torch.Tensor,
    num_topics: int, diversity_threshold: int, diversity_penalty: float,
) -> torch.Tensor:
    """P(click at rank r) = relevance_r / penalty · E_r, independently per rank (on the inputs' device)."""
    divisor = diversity_penalty_factor(slate_topics, num_topics, diversity_threshold, diversity_penalty)
    return slate_relevance / divisor[:, None] * propensities.to(slate_relevance.device)[None, :]
