"""The agents and their registry (docs/algorithms.md §4–5; the modules: docs/architecture.md).

`AGENTS[name]` is the `AgentSpec` each agent module registers for itself (`slatectl.agents.spec`); importing
this package imports every agent module, which fills `AGENTS` in the order below.
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
