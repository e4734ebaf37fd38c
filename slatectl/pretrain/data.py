"""Shapes and splits of the logged data used for pretraining: `slates` (E, H, K) item ids and `clicks`
(E, H, K) in {0, 1}, episodes in collection order. Both pretraining jobs hold out the *first* fraction of
episodes for validation, as the reference does.
"""

from __future__ import annotations

import math

from torch import Tensor


def check_logged_pair(slates: Tensor, clicks: Tensor, ndim: tuple[int, ...], num_items: int) -> None:
    """Raise ValueError unless slates/clicks have equal shapes of an allowed rank and item ids in [0, num_items)."""
    if slates.shape != clicks.shape:
        raise ValueError(f"slates {tuple(slates.shape)} and clicks {tuple(clicks.shape)} differ in shape")
    if slates.ndim not in ndim:
        raise ValueError(f"expected {' or '.join(f'{n}-D' for n in ndim)} tensors, got shape {tuple(slates.shape)}")
    if slates.is_floating_point():
        raise ValueError("slates must hold integer item ids")
    if slates.numel() and int(slates.min()) < 0:
        raise ValueError("slates contain negative item ids (unfilled oracle slots?); log the shown slates")
    if slates.numel() and int(slates.max()) >= num_items:
        raise ValueError(f"item id {int(slates.max())} >= num_items {num_items}")


def num_validation(n: int, val_fraction: float) -> int:
    """How many of n leading units (episodes or rows) are validation: round(n·f), at least 1 if f > 0,
    and always leaving at least one unit for training."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return 0
    if n < 2:
        raise ValueError(f"need at least 2 episodes/slates to hold out a validation part, got {n}")
    return min(max(1, math.floor(n * val_fraction + 0.5)), n - 1)
