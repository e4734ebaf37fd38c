"""Golden collection records: what `record_dataset` and `collect` wrote for fixed seeds and fixed weights,
so a change of how collection drives the agents (solo → stacked) is checked against the old output.

The weights do not come from an agent's own initialisation (which a refactor may reorder): every
parameter of the built agent is overwritten from its own seeded generator (seed = CRC-32 of its name,
normal with std 1/√fan-in), and the pretrained inputs are seeded tensors, so the weights depend only on
the checkpoint layout (names and shapes). Buffers are what the builder derives from the env and the
inputs (item tables, action boxes).

Written with the tree of the commit before collection switched to the stacked agents (b5a41f3, where
the solo agents went to `record_dataset` as they were), from a `git archive b5a41f3` export at OLD:
    OMP_NUM_THREADS=1 PYTHONPATH=OLD python tests/collect_golden.py tests/data/collect_golden.json
Without PYTHONPATH it writes what collection gives today.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from slatectl.agents.pretrained import AgentInputs
from slatectl.collect import collector
from slatectl.collect.collector import CollectRequest, collect_dataset
from slatectl.collect import load_npz
from slatectl.domain import BehaviourMode, Quality
from slatectl.collect.recorder import record_dataset
from slatectl.pretrain.gems import GeMS
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.assembly import build_agent
from slatectl.train.checkpoints import register_checkpoint
from slatectl.train.config import resolve_run_config
from slatectl.train.evaluation import Evaluation
from slatectl.train.loop import recorded_config

ENV = "focused_topdown"
AGENTS = ["random", "sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn", "slateq", "reinforce-softmax"]
MODES = ["greedy", "explore"]
#: 7 users in batches of 4 and 3 (a batch of ONE user takes other matrix-vector kernels on a CPU).
EPISODES, BATCH, SEED = 7, 4, 3
#: SlateQ's training step in the golden weights: ε = 0.01 + 0.99·exp(−1) ≈ 0.37 (both branches drawn).
SLATEQ_STEP = 1000
#: Large batches (rows of slot queries ≥ 2,048: the CPU kernels collection runs at its real sizes):
#: agent → (episodes, batch).
LARGE = {"sac-gems": (250, 250)}
#: Every how many-th element of a float array is stored by value (besides its sum).
FLOAT_SAMPLE_EVERY = 211
#: The `collect` cases: quality → agent of the promoted checkpoint (random: the random policy).
QUALITY_AGENTS = {"random": "random", "medium": "slateq", "expert": "sac-topk-ideal"}
ACTS = ["greedy", "sample"]


def golden_inputs() -> AgentInputs:
    g = torch.Generator().manual_seed(20_240_601)
    gems = GeMS(num_items=1000, slate_size=10, item_dim=20, latent_dim=32)
    set_golden_weights(gems, prefix="gems.")
    return AgentInputs(gems=gems, gems_bounds=(torch.full((32,), 0.1), torch.full((32,), 2.0)),
                       mf=torch.randn(1000, 20, generator=g))


@torch.no_grad()
def set_golden_weights(agent: torch.nn.Module, prefix: str = "") -> None:
    for name, p in agent.named_parameters():
        g = torch.Generator().manual_seed(zlib.crc32((prefix + name).encode()))
        fan_in = p.shape[-1] if p.dim() > 1 else 10
        p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    buffers = dict(agent.named_buffers())
    if "step" in buffers:  # SlateQ's ε schedule reads its training step from this buffer
        buffers["step"].fill_(SLATEQ_STEP)


#: Overrides of the golden configs: SAC+WkNN's default item table is a copy of its critic belief's initial
#: table (a buffer made by the agent's own initialisation); the MF input is a seeded table.
OVERRIDES = {"sac-wknn": ["agent.item_table=mf"]}


def golden_agent(name: str):
    env, agent = build_agent(resolve_run_config(name, ENV, overrides=OVERRIDES.get(name, [])), golden_inputs())
    set_golden_weights(agent)
    agent.eval()
    return env, agent


def describe(arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per array: dtype, shape, SHA-256 of its bytes; floats also their sum and every n-th value."""
    out = {}
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        entry = {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
        if np.issubdtype(a.dtype, np.floating):
            flat = a.reshape(-1).astype(np.float64)
            entry["sum"] = float(flat.sum())
            entry["abs_sum"] = float(np.abs(flat).sum())
            entry["every"] = FLOAT_SAMPLE_EVERY
            entry["values"] = [float(v) for v in flat[::FLOAT_SAMPLE_EVERY]]
        out[name] = entry
    return out


def collecting_agent(name: str, agent):
    """The agent as `record_dataset` takes it: its stacked form with one member (the solo agent itself on
    the commits before collection drove stacked agents, where the golden file was written)."""
    stacked_form = getattr(collector, "stacked_form", None)
    return agent if stacked_form is None else stacked_form(name, agent)


def record_cases() -> dict[str, dict]:
    cases = {}
    for name in AGENTS:
        env, agent = golden_agent(name)
        for mode in MODES:
            cases[f"{name}/{mode}"] = describe(record_dataset(env, collecting_agent(name, agent), EPISODES, SEED,
                                                              BATCH, mode=mode))
            if name in LARGE:
                episodes, batch = LARGE[name]
                cases[f"{name}/{mode}/large"] = describe(record_dataset(env, collecting_agent(name, agent), episodes,
                                                                        SEED, batch, mode=mode))
    return cases


def golden_home(home: Path) -> Settings:
    """A registry whose medium and expert checkpoints hold the golden weights of SlateQ and SAC+TopK ideal
    (neither needs a pretrained input)."""
    settings = Settings.resolve(home=home)
    with open_registry(settings) as registry:
        for quality, name in QUALITY_AGENTS.items():
            if name == "random":
                continue
            config = resolve_run_config(name, ENV)
            run = registry.start_run(name, ENV, config.training.seed, recorded_config(config, torch.device("cpu")),
                                     command="golden")
            _, agent = golden_agent(name)
            checkpoint = register_checkpoint(registry, run.id, 100, agent.state_dict(), Evaluation(1.0, 0.0, 1), 100,
                                             trained=True)
            registry.finish_run(run.id, status="finished")
            registry.promote_checkpoint(ENV, quality, checkpoint.id)
    return settings


def collect_cases(home: Path) -> dict[str, dict]:
    cases = {}
    settings = golden_home(home)
    with open_registry(settings) as registry:
        for quality in QUALITY_AGENTS:
            for act in ACTS:
                dataset = collect_dataset(registry, CollectRequest(ENV, Quality(quality), EPISODES, seed=SEED,
                                                                   batch_size=BATCH, act=BehaviourMode(act),
                                                                   encoder="none"))
                arrays, _ = load_npz(registry.dataset_path(dataset.id))
                cases[f"{quality}/{act}"] = describe(arrays)
    return cases


def main(out: Path) -> None:
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as home:
        golden = {"note": __doc__.strip().splitlines()[0] + " See tests/collect_golden.py for how it was made.",
                  "torch": torch.__version__, "record": record_cases(), "collect": collect_cases(Path(home))}
    out.write_text(json.dumps(golden, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
