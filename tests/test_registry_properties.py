"""Properties of promotion history under any sequence of promotions (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ENVS = ("a", "b")
QUALITIES = ("medium", "expert")
IMMUTABLE = ("id", "env", "quality", "checkpoint_id", "note", "promoted_by", "promoted_at")

promotion_steps = st.lists(st.tuples(st.sampled_from(ENVS), st.sampled_from(QUALITIES), st.integers(0, 2)),
                           min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=promotion_steps)
def test_any_sequence_of_promotions_keeps_one_active_and_full_history(reg, steps):
    prefix = uuid.uuid4().hex[:8]  # each example gets its own envs in the shared registry
    checkpoints = {}
    for env in ENVS:
        run = reg.start_run("sac-gems", f"{prefix}-{env}", 0, {})
        checkpoints[env] = [reg.register_checkpoint(run.id, s, {"w": torch.zeros(1)}, val_return_mean=float(s),
                                                    val_return_std=0.0, val_episodes=1).id for s in range(3)]
    snapshots = {}
    for n, (env, quality, index) in enumerate(steps):
        # allow_same: any checkpoint for any quality (the same-checkpoint refusal has its own tests)
        promotion = reg.promote_checkpoint(f"{prefix}-{env}", quality, checkpoints[env][index], note=f"#{n}",
                                           allow_same=True)
        snapshots[promotion.id] = {k: getattr(promotion, k) for k in IMMUTABLE}

    history = [p for p in reg.promotion_history() if p.env.startswith(prefix)]
    assert len(history) == len(steps)
    # Append-only: nothing but `active` / `superseded_by` ever changed on an earlier row.
    assert {p.id: {k: getattr(p, k) for k in IMMUTABLE} for p in history} == snapshots
    for env in ENVS:
        for quality in QUALITIES:
            chain = [p for p in history if (p.env, p.quality) == (f"{prefix}-{env}", quality)]
            if not chain:
                assert reg.active_promotion(f"{prefix}-{env}", quality) is None
                continue
            assert [p.active for p in chain] == [False] * (len(chain) - 1) + [True]
            assert [p.superseded_by for p in chain] == [p.id for p in chain[1:]] + [None]
            expected = [checkpoints[env][i] for e, q, i in steps if (e, q) == (env, quality)][-1]
            assert reg.active_promotion(f"{prefix}-{env}", quality).checkpoint_id == expected
