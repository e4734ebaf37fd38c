"""`slatectl evaluate`: the return of an offline-trained policy on the fixed test users, in a dataset's spaces.

A policy is either
- a TorchScript file (`torch.jit.save`, or d3rlpy's `save_policy("policy.pt")`): a module mapping a
  (B, F) float32 batch of *flat observations* to a (B, A) batch of actions. The flat observation is the
  dataset's `observations/latent` when it has an encoder, else its slate ids and clicks side by side
  (B, 2K). TorchScript archives hold TorchScript code and tensors, not pickled Python objects; or
- a Python callable named `module:function`, called with the observation dict of numpy arrays
  ({"slate" (B, K) int16, "clicks" (B, K) uint8, "latent" (B, d) float32}) and returning the actions.
Actions are latent actions in [−1, 1]^d (decoded by the dataset's encoder) or slates of item ids.

The score is the mean return over users 0 … N−1 of the test seed (the users every checkpoint's test
return is measured on) ± its standard error, and D4RL's normalised score
100 · (R − ref_min) / (ref_max − ref_min) with the dataset's reference scores (the random policy's and
the expert's returns), so it is comparable with the dataset's own `ref_min_score` / `ref_max_score`.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from slatectl.collect.collector import reference_scores
from slatectl.collect.dataset_env import FLOAT_DTYPE, SpaceMapping, check_layout
from slatectl.collect.encoder import default_encoder_id, load_encoder
from slatectl.errors import BadInput, JobFailed
from slatectl.registry import Registry
from slatectl.sim.config import load_env_config
from slatectl.sim.seeds import TEST_SEED

Policy = Callable[[dict[str, np.ndarray]], Any]
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class PolicyScore:
    env: str
    episodes: int
    seed: int
    mean: float
    sem: float
    action: str
    encoder_id: int | None
    dataset_id: int | None
    ref_min_score: float | None
    ref_max_score: float | None
    ref_max_source: str

    @property
    def normalised(self) -> float | None:
        """D4RL's normalised score (0 = random, 100 = expert), or None without both reference scores."""
        if self.ref_min_score is None or self.ref_max_score is None or self.ref_max_score == self.ref_min_score:
            return None
        return 100.0 * (self.mean - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    @property
    def normalised_sem(self) -> float | None:
        if self.normalised is None:
            return None
        return 100.0 * self.sem / abs(self.ref_max_score - self.ref_min_score)

    def as_dict(self) -> dict[str, Any]:
        return {"env": self.env, "episodes": self.episodes, "seed": self.seed, "mean_return": self.mean,
                "sem": self.sem, "normalised_score": self.normalised, "normalised_sem": self.normalised_sem,
                "ref_min_score": self.ref_min_score, "ref_max_score": self.ref_max_score,
                "ref_max_source": self.ref_max_source, "action": self.action, "encoder_id": self.encoder_id,
                "dataset_id": self.dataset_id}


def flat_observation(observation: dict[str, np.ndarray]) -> np.ndarray:
    """The (B, F) float32 input of a TorchScript policy: the latent features, else slate ids and clicks."""
    if "latent" in observation:
        return observation["latent"].astype(FLOAT_DTYPE, copy=False)
    return np.concatenate([observation["slate"], observation["clicks"]], axis=1).astype(FLOAT_DTYPE)


def load_policy(spec: str) -> Policy:
    """A policy from a TorchScript file path or a `module:function` name (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, KeyError) as exc:
            raise BadInput(f"{path} is not a TorchScript policy file "
                           f"({(str(exc).splitlines() or [type(exc).__name__])[0]}).") from exc
        module.eval()

        def scripted(observation: dict[str, np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(flat_observation(observation))).cpu().numpy()

        return scripted
    if not _CALLABLE.match(spec):
        raise BadInput(f"POLICY must be a TorchScript file or a Python callable as module:function; {spec!r} is "
                       f"neither (no such file).")
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"cannot import {module_name!r} for the policy {spec!r}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise BadInput(f"{module_name!r} has no callable {function_name!r}.")
    return function


def evaluate_policy(registry: Registry, policy: Policy, env: str, episodes: int = 500,
                    dataset_id: int | None = None, action: str | None = None, seed: int = TEST_SEED,
                    batch_size: int = 500) -> PolicyScore:
    """Score `policy` on users 0 … episodes−1 of `seed` in the spaces of dataset `dataset_id` (its encoder,
    its reference scores), or, without a dataset, of `env`'s default encoder and reference scores."""
    config = load_env_config(env)
    if episodes < 1:
        raise BadInput("--episodes must be >= 1.")
    if dataset_id is not None:
        dataset = registry.get_dataset(dataset_id)
        metadata = dict(dataset.meta or {})
        check_layout(metadata, f"dataset {dataset_id}")
        if dataset.env != config.name:
            raise BadInput(f"dataset {dataset_id} is of {dataset.env}, not of {config.name}.")
        recorded = metadata.get("encoder")
        encoder = load_encoder(registry, recorded["artifact_id"], config.name, recorded["sha256"]) if recorded else None
        ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
        source = metadata.get("ref_max_source") or "the dataset's metadata"
    else:
        encoder_id = default_encoder_id(registry, config.name)
        encoder = load_encoder(registry, encoder_id, config.name) if encoder_id is not None else None
        ref_min, ref_max, source = reference_scores(registry, config.name)
    mapping = SpaceMapping(config, encoder, action or ("latent" if encoder is not None else "slate"))
    try:
        returns = mapping.play(policy, episodes, seed, batch_size)
    except BadInput:
        raise
    except Exception as exc:  # the user's policy failed: the job failed, with the policy's own message
        raise JobFailed(f"the policy raised {type(exc).__name__}: {exc}") from exc
    sem = float(returns.std(ddof=1) / math.sqrt(episodes)) if episodes > 1 else 0.0
    return PolicyScore(config.name, episodes, seed, float(returns.mean()), sem, mapping.action,
                       encoder.artifact_id if encoder is not None else None, dataset_id, ref_min, ref_max, source)
