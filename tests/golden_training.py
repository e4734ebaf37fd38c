"""Golden figures of training and collection, recorded before the training engine was rewritten (issue 21).

`figures(home)` trains, from fixed seeds, one SAC+GeMS population (two envs × two seeds) and a short solo
run of every trainable agent (the solo SAC+GeMS run reuses the population's GeMS of its env and seed), then collects one greedy dataset from the solo SAC+GeMS run's last
checkpoint. It returns, for each run, the validation return at every validated step, the test return and
a fingerprint of every tensor of every checkpoint (sum and sum of absolute values), and, for the dataset,
the file's SHA-256, the SHA-256 of each integer or boolean array and the fingerprint of each float array. `tests/test_golden_training.py` compares a fresh
computation against `tests/data/golden_training.json`.

Written on commit a0e412b (the two-engine code; there the population trainer was `PopulationTrainer`, and
registry/, storage/ and configs/ linked into slatectl/ as the installed package maps them) with:

    OMP_NUM_THREADS=1 python tests/golden_training.py --write

Each run: 16 steps, random phase 4, validation every 4 steps on 8 users, a checkpoint every 4 steps, so
every agent makes its updates (12 of them; REINFORCE 16) before its last checkpoint.

Every validation step is a save step (every 4 steps), so each validation return has the weights it came
from in a checkpoint: a test can tell a near-tie flipped by float rounding from a changed policy.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from slatectl.agents.spec import trainable_agents
from slatectl.collect import load_npz
from slatectl.collect.collector import CollectRequest, collect_dataset
from slatectl.domain import BehaviourMode, Quality
from slatectl.registry import open_registry
from slatectl.settings import Settings
from slatectl.train.config import resolve_run_config
from slatectl.train.loop import Trainer
from slatectl.train.population import population_configs

GOLDEN = Path(__file__).parent / "data" / "golden_training.json"
ENV = "focused_topdown"
SMALL = [
    "training.random_steps=4", "training.val_every=4", "training.val_episodes=8", "training.test_episodes=8",
    "training.random_phase_batch=4", "agent.batch_size=4", "agent.capacity=50",
    "logged.episodes=200", "gems.max_epochs=1", "gems.max_slates=4000", "mf.max_batches=30", "mf.eval_every_batches=10",
]
#: Per agent: REINFORCE is on-policy (its replay holds one batch); SlateQ's ε decays within the run.
EXTRA = {"reinforce-softmax": ["agent.capacity=4"], "slateq": ["agent.epsilon_decay=8"]}
STEPS = {"max_steps": 16, "save_every": 4, "seed": 7}
SEED = STEPS["seed"]


def _config(agent: str, env: str = ENV):
    return resolve_run_config(agent, env, overrides=SMALL + EXTRA.get(agent, []), cli_training=dict(STEPS))


def _fingerprint(tensors: dict) -> dict[str, list[float]]:
    """Per tensor: [sum, sum of |x|] in float64 (integer tensors exactly)."""
    out = {}
    for name, value in sorted(tensors.items()):
        t = torch.as_tensor(value).double()
        out[name] = [float(t.sum()), float(t.abs().sum())]
    return out


def _run_figures(registry, run_id: int) -> dict:
    checkpoints = registry.list_checkpoints(run_id=run_id)
    return {
        "run_id": run_id,
        "validations": {str(v.step): v.return_mean for v in registry.validations(run_id)},
        "checkpoints": {str(c.step): {"val_return": c.val_return_mean, "test_return": c.test_return_mean,
                                      "weights": _fingerprint(registry.load_checkpoint_state(c.id))}
                        for c in checkpoints},
    }


def figures(home: Path) -> dict:
    """The figures at one torch thread, as they were recorded (with more threads the kernels split rows
    differently and round differently: the weights stay within rounding, near-ties may not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _figures(home)
    finally:
        torch.set_num_threads(threads)


def _figures(home: Path) -> dict:
    settings = Settings.resolve(home=home)
    out: dict = {"solo": {}, "population": [], "dataset": {}}
    with open_registry(settings) as registry:
        # The population first: its GeMS (pretrained as one stack) is also the solo SAC+GeMS run's input, so
        # the solo run's figures test the training engine alone (the GeMS fit has its own golden values).
        base = [_config("sac-gems", env) for env in (ENV, "diffuse_divpen")]
        results = Trainer(registry, population_configs(base, [SEED, SEED + 1])).run(command="golden")
        out["population"] = [{"env": registry.get_run(r.run_id).env, "seed": registry.get_run(r.run_id).seed,
                              **_run_figures(registry, r.run_id)} for r in results]
        for agent in trainable_agents():
            (result,) = Trainer(registry, _config(agent)).run(command="golden")
            run_id = result.run_id
            out["solo"][agent] = _run_figures(registry, run_id)
        gems_run = next(r for r in registry.list_runs() if r.agent == "sac-gems" and r.group_id is None)
        last = registry.list_checkpoints(run_id=gems_run.id)[-1]
        registry.promote_checkpoint(ENV, Quality.MEDIUM.value, last.id)
        dataset = collect_dataset(registry, CollectRequest(ENV, Quality.MEDIUM, episodes=20, seed=3, batch_size=10,
                                                           act=BehaviourMode.GREEDY))
        path = registry.dataset_path(dataset.id)
        arrays, _ = load_npz(path)
        arrays = {name: np.asarray(value) for name, value in arrays.items()}
        out["dataset"] = {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "exact_arrays": {name: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                             for name, a in sorted(arrays.items()) if not np.issubdtype(a.dtype, np.floating)},
            "float_arrays": _fingerprint({name: a for name, a in arrays.items() if np.issubdtype(a.dtype, np.floating)}),
        }
    return out


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/golden_training.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        result = figures(Path(tmp) / "home")
    GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
