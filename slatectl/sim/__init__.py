"""TopicRec: the batched slate-recommendation simulator (env → pretrain → train → registry → collect).

Where things are: `config.py` (env parameters), `embeddings.py` (item tables), `click_model.py`
(relevance, propensities, diversity penalty), `topicrec.py` (the batched user dynamics, boredom, drift),
`rng.py` (per-user counter-based randomness), `policies.py` (random / oracle / ε-oracle),
`rollout.py` (batched evaluation), `gym_env.py` (gymnasium wrapper, registered on import).
"""

from slatectl.sim.factory import make_env
from slatectl.sim.gym_env import register_gym_envs
from slatectl.sim.topicrec import Observation, StepResult, TopicRec

register_gym_envs()

__all__ = ["make_env", "TopicRec", "Observation", "StepResult"]
