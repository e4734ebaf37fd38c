"""With the reference item tables, random and short-term-oracle returns match the reference simulator's.

The reference figures, with their provenance, are in tests/data/reference_returns.yaml: rounded means of
500 episodes each. Tolerance: 4 standard errors of the difference,
sqrt(SEM_ours² + SEM_ref²) with SEM_ref = our std / sqrt(500) (same policy, same env), plus 0.5 for the
rounding of the published figure.
"""

import math
from pathlib import Path

import pytest
import yaml

from slatectl.sim.config import env_names, load_env_config
from slatectl.sim.embeddings import reference_embeddings_path
from slatectl.sim.factory import make_env
from slatectl.sim.policies import POLICIES
from slatectl.sim.rollout import rollout

_FIGURES = yaml.safe_load((Path(__file__).parent / "data" / "reference_returns.yaml").read_text())
REFERENCE_EPISODES = _FIGURES["episodes_per_cell"]
REFERENCE = {env: (cell["random"], cell["oracle"]) for env, cell in _FIGURES["returns"].items()}  # env: (random, oracle)
EPISODES = 2000


def _tolerance(stats):
    return 4 * math.sqrt(stats.sem**2 + stats.std**2 / REFERENCE_EPISODES) + 0.5


def test_the_reference_table_covers_every_env():
    assert sorted(REFERENCE) == sorted(env_names())


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
