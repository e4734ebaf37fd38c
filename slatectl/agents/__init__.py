"""The agents and their registry (docs/algorithms.md §4–5; reference notes §7).

`AGENTS[name]` is an `AgentSpec`:
- `params_cls`: the typed dataclass of the agent's hyper-parameters (defaults = the reference values,
  also in configs/agents/<name>.yaml); every one has `capacity` and `batch_size` (in episodes) for the
  loop's replay and a `validate()` that raises `BadInput`;
- `needs`: the pretrained inputs the loop must provide with the default params ("gems", "mf");
  `spec.needs_for(params)` gives them for a particular params value (WkNN needs "mf" only with
  `item_table: mf`);
- `build(params, env, inputs) -> Agent`, with `inputs` holding "gems" (frozen GeMS module),
  "gems_bounds" ((center, scale) of its latent box) and/or "mf" ((N, D) item table) as needed.

Modules: `base` (the contract), `belief` (GRU belief), `rankers` (TopK, GeMS), `sac` (SAC+GeMS,
SAC+TopK ideal/MF), `wknn` (SAC+WkNN), `slateq`, `reinforce`, `nets` (small shared pieces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from slatectl.agents.base import Agent, EpisodeBatch
from slatectl.agents.reinforce import ReinforceParams, ReinforceSoftmax
from slatectl.agents.sac import SACAgent, SACParams, build_sac_gems, build_sac_topk_ideal, build_sac_topk_mf
from slatectl.agents.slateq import SlateQ, SlateQParams
from slatectl.agents.wknn import WkNNParams, WolpertingerSAC, build_sac_wknn
from slatectl.sim.topicrec import TopicRec


@dataclass(frozen=True)
class AgentSpec:
    name: str
    display_name: str  # the reference/paper name
    params_cls: type
    needs: tuple[str, ...]
    build: Callable[[Any, TopicRec, dict], Agent]
    privileged: bool = False  # uses hidden environment information (the paper's "disclosed env.")

    def needs_for(self, params: Any) -> tuple[str, ...]:
        """Pretrained inputs required by this params value (defaults to `needs`)."""
        method = getattr(params, "needs", None)
        return tuple(method()) if callable(method) else self.needs


def _build_slateq(params: SlateQParams, env: TopicRec, inputs: dict) -> SlateQ:
    return SlateQ(params, env)


def _build_reinforce(params: ReinforceParams, env: TopicRec, inputs: dict) -> ReinforceSoftmax:
    return ReinforceSoftmax(params, env.config.num_items, env.config.slate_size)


AGENTS: dict[str, AgentSpec] = {
    "sac-gems": AgentSpec("sac-gems", "SAC+GeMS", SACParams, ("gems",), build_sac_gems),
    "sac-topk-ideal": AgentSpec("sac-topk-ideal", "SAC+TopK (ideal)", SACParams, (), build_sac_topk_ideal, privileged=True),
    "sac-topk-mf": AgentSpec("sac-topk-mf", "SAC+TopK (MF)", SACParams, ("mf",), build_sac_topk_mf),
    "sac-wknn": AgentSpec("sac-wknn", "SAC+WkNN", WkNNParams, (), build_sac_wknn),
    "slateq": AgentSpec("slateq", "SlateQ", SlateQParams, (), _build_slateq, privileged=True),
    "reinforce-softmax": AgentSpec("reinforce-softmax", "REINFORCE+SoftMax", ReinforceParams, (), _build_reinforce),
}

__all__ = ["AGENTS", "AgentSpec", "Agent", "EpisodeBatch", "SACAgent", "SACParams", "WolpertingerSAC", "WkNNParams",
           "SlateQ", "SlateQParams", "ReinforceSoftmax", "ReinforceParams"]
