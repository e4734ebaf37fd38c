"""With the reference item tables, random and short-term-oracle returns match shared/reference/results.md.

The reference figures are rounded means of 500 episodes. Tolerance: 4 standard errors of the difference,
sqrt(SEM_ours² + SEM_ref²) with SEM_ref = our std / sqrt(500) (same policy, same env), plus 0.5 for the
rounding of the published figure.
"""

import math

import pytest

from slatectl.sim.config import load_env_config
from slatectl.sim.embeddings import reference_embeddings_path
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rollout import rollout

REFERENCE = {  # env: (random, short-term oracle)
    "focused_topdown": (34, 104), "focused_mix": (34, 102), "focused_divpen": (32, 77),
    "diffuse_topdown": (33, 98), "diffuse_mix": (33, 97), "diffuse_divpen": (31, 77),
}
EPISODES = 2000


def _tolerance(stats):
    return 4 * math.sqrt(stats.sem**2 + stats.std**2 / 500) + 0.5


@pytest.mark.parametrize("env_name", sorted(REFERENCE))
@pytest.mark.parametrize("policy_name", ["random", "oracle"])
def test_reference_tables_reproduce_reference_returns(env_name, policy_name):
    variant = load_env_config(env_name).item_embeddings
    env = make_env(env_name, reference_embeddings_path(variant))
    stats = rollout(env, POLICIES[policy_name](), EPISODES, seed=20261125, batch_size=EPISODES)
    target = REFERENCE[env_name][0 if policy_name == "random" else 1]
    assert abs(stats.mean - target) <= _tolerance(stats), (stats.mean, stats.sem, target)


@pytest.mark.parametrize("env_name", sorted(REFERENCE))
def test_generated_default_tables_give_reference_levels(env_name):
    """The default (generated) tables: same benchmark levels as the shipped ones, within noise."""
    env = make_env(env_name)
    for i, policy_name in enumerate(["random", "oracle"]):
        stats = rollout(env, POLICIES[policy_name](), EPISODES, seed=77, batch_size=EPISODES)
        assert abs(stats.mean - REFERENCE[env_name][i]) <= _tolerance(stats), (policy_name, stats.mean, stats.sem)
