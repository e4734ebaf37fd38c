"""What an agent module declares about itself (`AgentSpec`), and the `AGENTS` table the modules register into.

Each agent module ends with `register_agent(AgentSpec(...))` (as d3rlpy's algorithm registry does), so
adding an agent means adding one module and importing it in `slatectl.agents`; nothing else lists agents.
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
    name: str  # the CLI name
    display_name: str  # the reference's / paper's name
    #: The typed hyper-parameters (defaults = the reference's, also in configs/agents/<name>.yaml); each has
    #: `capacity` and `batch_size` (in episodes) for the loop's replay and a `validate()` raising `BadInput`.
    params_cls: type
    #: (params, env, inputs: the pretrained pieces) → one run's layout (`Agent`: weights and optimizers).
    build: Callable[[Any, "TopicRec", "AgentInputs"], "Agent"]
    #: Pretrained inputs needed with the default params; a params class whose needs depend on its values
    #: (WkNN's `item_table: mf`) defines `needs()`, and `needs_for(params)` asks it.
    needs: tuple[str, ...] = ()
    privileged: bool = False  # reads hidden environment state (the paper's "disclosed env.")
    trainable: bool = True  # False for fixed policies (the random policy): collection uses them, `train` refuses
    #: The stacked form (`slatectl.agents.stacked.StackedAgent`: K ≥ 1 members in lockstep, all the agent's
    #: math), which the trainer and collection drive; a trainable agent needs one.
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
