"""What an agent module declares about itself, and the `AGENTS` table the modules register into.

Each agent module ends with `register_agent(AgentSpec(...))` (as d3rlpy's algorithm registry does), so
adding an agent means adding one module and importing it in `slatectl.agents`; nothing else lists agents.

An `AgentSpec` holds:
- `name` (the CLI name) and `display_name` (the reference/paper name);
- `params_cls`: the typed dataclass of the agent's hyper-parameters (defaults = the reference values,
  also in configs/agents/<name>.yaml); every one has `capacity` and `batch_size` (in episodes) for the
  loop's replay and a `validate()` that raises `BadInput`;
- `build(params, env, inputs) -> Agent`, one run's layout (weights and optimizers), with `inputs` an
  `AgentInputs` (pretrained pieces);
- `needs`: the pretrained inputs the agent needs with its default params (`PRETRAINED_INPUTS`);
  `spec.needs_for(params)` gives them for a particular params value (a params class may define
  `needs()` when they depend on its values, as WkNN's `item_table: mf`);
- `privileged`: whether it reads hidden environment state (the paper's "disclosed env.");
- `trainable`: False for fixed policies (the random policy) that collection uses but `train` refuses;
- `population`: the agent's stacked form, which holds all its math and is what the trainer and collection
  drive: K ≥ 1 members of this agent in lockstep, built from their K layouts
  (`slatectl.agents.stacked.StackedAgent`; a lone run is K = 1). A trainable agent needs one (the trainer
  refuses an agent without).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from slatectl.errors import BadInput

if TYPE_CHECKING:  # typing only: the modules below import this one
    from slatectl.agents.base import Agent
    from slatectl.agents.pretrained import AgentInputs
    from slatectl.agents.stacked import StackedAgent
    from slatectl.sim.topicrec import TopicRec

#: Pretrained inputs an agent may need: a GeMS model (with its latent box) or MF item embeddings.
PRETRAINED_INPUTS = ("gems", "mf")


@dataclass(frozen=True)
class AgentSpec:
    name: str
    display_name: str
    params_cls: type
    build: Callable[[Any, "TopicRec", "AgentInputs"], "Agent"]
    needs: tuple[str, ...] = ()
    privileged: bool = False
    trainable: bool = True
    population: Callable[[list["Agent"]], "StackedAgent"] | None = None

    def needs_for(self, params: Any) -> tuple[str, ...]:
        """Pretrained inputs required by this params value (defaults to `needs`)."""
        method = getattr(params, "needs", None)
        return tuple(method()) if callable(method) else self.needs


AGENTS: dict[str, AgentSpec] = {}


def register_agent(spec: AgentSpec) -> AgentSpec:
    """Add `spec` to `AGENTS` (called once at the end of each agent module)."""
    unknown = set(spec.needs) - set(PRETRAINED_INPUTS)
    if unknown:
        raise ValueError(f"agent {spec.name!r} needs unknown inputs {sorted(unknown)}; known: {PRETRAINED_INPUTS}")
    if spec.name in AGENTS and AGENTS[spec.name] is not spec:
        raise ValueError(f"two agents are registered as {spec.name!r}")
    AGENTS[spec.name] = spec
    return spec


def trainable_agents() -> list[str]:
    """Names that `slatectl train` accepts, in registration order."""
    return [name for name, spec in AGENTS.items() if spec.trainable]


def agent_spec(name: str, trainable: bool = False) -> AgentSpec:
    """The spec of `name`; BadInput naming the choices when unknown (or not trainable, if asked)."""
    known = trainable_agents() if trainable else list(AGENTS)
    if name not in known:
        raise BadInput(f"unknown agent {name!r}. Known agents: {', '.join(known)}.")
    return AGENTS[name]
