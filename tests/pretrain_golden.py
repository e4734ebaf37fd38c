"""Fixed-seed short pretrainings whose results are pinned in tests/data/pretrain_golden.json.

`python tests/pretrain_golden.py` (from the repository root, OMP_NUM_THREADS=1) writes that file (and
`--compare` says, run by run, whether today's code reproduces it bit for bit); it was
run on the commit before the GeMS fit was written once over the member dimension (a0e412b), so the
file holds what the two earlier implementations (solo `gems_train`, stacked `gems_population`) and MF
produced. Only the public API that both versions share is called here (`train_gems`,
`train_gems_population`, `GeMSMember`, `train_mf`), so the same runs execute on either side.

A model is recorded as a fingerprint per tensor: SHA-256 of its float32 bytes (bitwise equality), its
float64 sum and L2 norm, and its inner products with two fixed pseudo-random vectors (these move with
any change of the weights, not only with changes of their sum)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))  # synthetic_logged, when run as a script

from synthetic_logged import prototype_slates, topic_user_clicks  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "pretrain_golden.json"
HISTORY_KEYS = ("epoch", "batch", "train_loss", "val_loss", "val_auc")


def fingerprint(tensor: torch.Tensor) -> dict[str, Any]:
    flat = tensor.detach().float().contiguous().flatten()
    generator = torch.Generator().manual_seed(flat.numel())
    probes = torch.randn(2, flat.numel(), generator=generator, dtype=torch.float64)
    return {"sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(), "sum": flat.double().sum().item(),
            "norm": flat.double().norm().item(), "probes": (probes @ flat.double()).tolist()}


def _gems_record(model: torch.nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"weights": {name: fingerprint(value) for name, value in model.state_dict().items()},
            "best_epoch": metrics["best_epoch"], "val_loss": metrics["val_loss"],
            "history": metrics["history"],
            "val_terms": {k: metrics[k] for k in ("val_slate_ce", "val_click_bce", "val_kl", "val_slate_accuracy",
                                                  "val_click_accuracy")}}


def gems_runs() -> dict[str, dict[str, Any]]:
    """Solo runs (both engines; shuffled with the reference noise, file order with the textbook noise) and
    one stacked population of two members (other data, other seeds)."""
    from slatectl.pretrain.gems_train import GeMSConfig, train_gems
    try:  # where they were when the file was pinned; then they moved to gems_train
        from slatectl.pretrain.gems_population import GeMSMember, train_gems_population
    except ImportError:
        from slatectl.pretrain.gems_train import GeMSMember, train_gems_population

    records: dict[str, dict[str, Any]] = {}
    solo = {"solo_shuffled": (GeMSConfig(max_epochs=3, batch_size=32, latent_dim=8), 5, 0),
            "solo_file_order_std": (GeMSConfig(max_epochs=2, batch_size=48, latent_dim=8, shuffle=False,
                                               reparam_noise="std"), 6, 1)}
    for name, (config, seed, data_seed) in solo.items():
        slates, clicks, _ = prototype_slates(episodes=12, steps=20, seed=data_seed)
        for engine in ("loop", "lightning"):
            records[f"{name}_{engine}"] = _gems_record(*train_gems(slates, clicks, config, seed, engine=engine))
    config = GeMSConfig(max_epochs=3, batch_size=32, latent_dim=8)
    members = [GeMSMember(*prototype_slates(episodes=12, steps=20, seed=10 + k)[:2], config, seed)
               for k, seed in enumerate((1, 2))]
    for k, (model, metrics) in enumerate(train_gems_population(members)):
        records[f"population_member{k}"] = _gems_record(model, metrics)
    return records


def mf_runs() -> dict[str, dict[str, Any]]:
    """One run stopped by patience inside an epoch, one cut by the batch cap; both engines."""
    from slatectl.pretrain.mf import MFConfig, train_mf

    slates, clicks, _ = topic_user_clicks(episodes=60, steps=20, seed=4)
    configs = {"mf_patience": MFConfig(lr=0.05, eval_every_batches=7, patience=2, batch_size=64),
               "mf_batch_cap": MFConfig(eval_every_batches=10, max_batches=45, batch_size=64, patience=100)}
    records: dict[str, dict[str, Any]] = {}
    for name, config in configs.items():
        for engine in ("loop", "lightning"):
            table, metrics = train_mf(slates, clicks, config, seed=8, engine=engine)
            records[f"{name}_{engine}"] = {
                "weights": {"item_table": fingerprint(table)},
                "best_batch": metrics["best_batch"], "batches": metrics["batches"], "val_loss": metrics["val_loss"],
                "history": [{k: row[k] for k in HISTORY_KEYS if k in row} for row in metrics["history"]]}
    return records


def all_runs() -> dict[str, dict[str, Any]]:
    return {**gems_runs(), **mf_runs()}


def bitwise_report(runs: dict[str, dict[str, Any]]) -> list[str]:
    """One line per pinned run: whether every tensor's SHA-256 equals the pinned one."""
    pinned = json.loads(GOLDEN.read_text())["runs"]
    lines = []
    for name, record in runs.items():
        differ = [t for t, f in record["weights"].items() if f["sha256"] != pinned[name]["weights"][t]["sha256"]]
        lines.append(f"{name}: " + ("bitwise equal" if not differ else f"{len(differ)} of {len(record['weights'])} tensors differ in bits"))
    return lines


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1:] == ["--compare"]:  # how today's code compares with the pinned file, bit for bit
        print("\n".join(bitwise_report(all_runs())))
        sys.exit(0)
    GOLDEN.write_text(json.dumps({"produced_by": "OMP_NUM_THREADS=1 python tests/pretrain_golden.py on a0e412b",
                                  "runs": all_runs()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
