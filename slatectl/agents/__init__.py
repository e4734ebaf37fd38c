"""The agents and their registry (docs/algorithms.md §4–5).

`AGENTS[name]` is the `AgentSpec` each agent module registers for itself (`slatectl.agents.spec`):
its params dataclass, builder, needed pretrained inputs and flags. Importing this package imports every
agent module, which fills `AGENTS` in this order.

Modules: `base` (the member layout every agent builds on, the episode batch), `stacked` (the
`StackedAgent` base the trainer and collection drive: K ≥ 1 members in lockstep), `spec` (AgentSpec,
AGENTS, register_agent), `pretrained` (AgentInputs and the builders' shared input checks), `belief` (the
GRU belief's layout), `batched_gru` (the members' GRU unroll), `rankers` (TopK, GeMS), `critic_pair` (SAC's
two critics as one pair), `nets` (small shared pieces); then one file per algorithm, each its layout, its
stacked form with all its math, its builder and its registration: `sac` (SAC+GeMS, SAC+TopK ideal/MF),
`wknn` (SAC+WkNN), `slateq`, `reinforce`, `random_policy` (the uniform random policy, used by
collection, not trainable).
"""

from __future__ import annotations

from slatectl.agents.base import Agent, EpisodeBatch
from slatectl.agents.pretrained import AgentInputs
from slatectl.agents.spec import AGENTS, AgentSpec, agent_spec, register_agent, trainable_agents

# Each import registers the module's agents; the import order is the order `AGENTS` lists them in.
from slatectl.agents import sac  # noqa: E402,F401  sac-gems, sac-topk-ideal, sac-topk-mf
from slatectl.agents import wknn  # noqa: E402,F401  sac-wknn
from slatectl.agents import slateq  # noqa: E402,F401
from slatectl.agents import reinforce  # noqa: E402,F401  reinforce-softmax
from slatectl.agents import random_policy  # noqa: E402,F401  random

__all__ = ["AGENTS", "AgentSpec", "Agent", "AgentInputs", "EpisodeBatch", "agent_spec", "register_agent",
           "trainable_agents"]
