"""TopicRec: the batched slate-recommendation simulator (env → pretrain → train → registry → collect).

Where things are: `config.py` (env parameters), `embeddings.py` (item tables), `click_model.py`
(relevance, propensities, diversity penalty), `topicrec.py` (the batched user dynamics, boredom, drift),
`rng.py` (per-user counter-based randomness), `policies.py` (random / oracle / ε-oracle),
`rollout.py` (batched evaluation), `gym_env.py` (gymnasium wrapper), `gym_registration.py` (its ids,
registered on import).

This package's import is light on purpose: it registers the gymnasium ids (string entry points, no
torch) and resolves `make_env`, `TopicRec`, ... on first use, so torch-free users such as
`slatectl env list` (which reads `slatectl.sim.config`) never pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from slatectl.sim.gym_registration import register_gym_envs

register_gym_envs()

# Public name -> module that defines it (imported on first attribute access, PEP 562).
_LAZY = {"make_env": "slatectl.sim.factory", "TopicRec": "slatectl.sim.topicrec",
         "Observation": "slatectl.sim.topicrec", "StepResult": "slatectl.sim.topicrec"}

__all__ = ["make_env", "TopicRec", "Observation", "StepResult"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
