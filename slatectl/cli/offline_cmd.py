"""`slatectl evaluate` and `slatectl relabel`: the offline researcher's side of a dataset."""

from __future__ import annotations

from typing import Optional

import typer

from slatectl.cli.common import EPISODES_RANGE, SEED_RANGE, console, get_settings, print_json
from slatectl.collect.policy_eval import evaluate_policy, load_policy
from slatectl.collect.relabel import relabel_dataset
from slatectl.registry import open_registry
from slatectl.sim.seeds import TEST_SEED
from slatectl.threads import configure_torch_threads


def evaluate(
    policy: str = typer.Argument(..., metavar="POLICY", help="A TorchScript policy file (e.g. d3rlpy's save_policy) or a Python callable module:function."),
    env: str = typer.Option(..., "--env", metavar="ENV", help="The environment."),
    episodes: int = typer.Option(500, "--episodes", metavar="N", **EPISODES_RANGE, help="Test users 0..N-1 (500: those of every checkpoint's test return)."),
    dataset: Optional[int] = typer.Option(None, "--dataset", metavar="ID", min=1, help="Use this dataset's spaces (its encoder) and reference scores [default: the env's default encoder and the registry's reference scores]."),
    action: Optional[str] = typer.Option(None, "--action", metavar="latent|slate", help="What the policy returns [default: latent when there is an encoder, else slate]."),
    seed: int = typer.Option(TEST_SEED, "--seed", metavar="SEED", **SEED_RANGE, help="Seed of the users [default: the test seed]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Mean return ± SEM of a policy on the fixed test users, and its D4RL normalised score.

    A TorchScript policy maps a (B, F) float32 batch of flat observations (the dataset's
    observations/latent) to actions; a callable gets the observation dict of numpy arrays. See
    docs/offline.md.

    Example: slatectl evaluate policy.pt --env focused_topdown --dataset 3

    Example: slatectl evaluate my_policies:greedy --env focused_topdown --episodes 200
    """
    configure_torch_threads(get_settings().threads)
    loaded = load_policy(policy)
    with open_registry(get_settings()) as registry:
        score = evaluate_policy(registry, loaded, env, episodes, dataset, action, seed)
    if as_json:
        print_json(score.as_dict())
        return
    rows = [("policy", policy),
            ("env", f"{score.env}, {score.action} actions"
                    + (f", encoder {score.encoder_id}" if score.encoder_id is not None else ", no encoder")),
            ("users", f"{score.episodes} of seed {score.seed}"),
            ("mean return", f"{score.mean:.2f} ± {score.sem:.2f} (SEM)")]
    if score.normalised is None:
        rows.append(("normalised", f"none: {score.ref_max_source}"))
    else:
        rows += [("normalised", f"{score.normalised:.1f} ± {score.normalised_sem:.1f} "
                                f"(0 = {score.ref_min_score:.2f}, 100 = {score.ref_max_score:.2f})"),
                 ("0 is", "the uniform random policy's return"), ("100 is", score.ref_max_source)]
    for name, value in rows:  # one fact per line: paths and names stay whole at 80 columns
        console.print(f"{name + ':':<13}{value}", highlight=False, soft_wrap=True)


def relabel(
    dataset: int = typer.Argument(..., metavar="DATASET_ID", min=1, help="The npz dataset to relabel."),
    encoder: Optional[str] = typer.Option(None, "--encoder", metavar="ARTIFACT", help="GeMS artifact id, or `none` [default: the env's default encoder]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """A new dataset with DATASET_ID's transitions and another encoder's features (no re-simulation).

    The last stdout line is the new dataset's id; the original is unchanged.

    Example: slatectl relabel 3 --encoder 7
    """
    configure_torch_threads(get_settings().threads)
    with open_registry(get_settings()) as registry:
        new = relabel_dataset(registry, dataset, encoder)
        path = str(registry.store.path_for(new.storage_key))
    encoder_record = (new.meta or {}).get("encoder")
    if as_json:
        print_json({"id": new.id, "relabelled_from": dataset, "env": new.env, "quality": new.quality,
                    "encoder_id": encoder_record["artifact_id"] if encoder_record else None, "path": path})
        return
    console.print(f"dataset {new.id}: dataset {dataset} relabelled with "
                  + (f"encoder {encoder_record['artifact_id']}" if encoder_record else "no encoder"), highlight=False)
    console.print(f"  path: {path}", highlight=False, soft_wrap=True)
    typer.echo(new.id)
