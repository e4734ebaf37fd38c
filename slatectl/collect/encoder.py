"""The one encoder per environment that gives every dataset of that env the same continuous features.

Datasets of one env pool only if their continuous observation and action mean the same thing whatever
agent or checkpoint collected them. The collecting agent's own belief (its GRU) and raw action (its
GeMS or TopK latent) do not: they belong to one checkpoint. So the primary record is the env's own
observation (slate shown, clicks) and action (slate of item ids), and the continuous features come from
a registered GeMS (docs/algorithms.md §2), the dataset's *encoder*, named in the metadata:

    observations/latent  = μ(o_t.slate, o_t.clicks)                       GeMS posterior mean, (d,)
    actions/latent       = clip((μ(a_t, 0) − center) / scale, −1, 1)    the slate alone, in [−1, 1]^d
    decode(a)            = GeMS.rank(center + scale · clip(a, −1, 1))    back to a slate of item ids

The action is encoded with zero clicks on purpose: encoding it with the clicks that followed it would
put the reward (the click count) into the action, and the same slate would map to different actions.
(center, scale) is the GeMS action box from pretraining (the aggregated posterior's μ ± σ bounds that
SAC+GeMS acts in), so [−1, 1] maps onto exactly the box a SAC+GeMS actor's tanh spans.

Which encoder: `--encoder ARTIFACT` names one; the default keeps an env pooled: the encoder of the
env's existing datasets, else the GeMS of the collecting run, else the env's newest GeMS; with none
registered, collection stops and says how to make one (or `--encoder none` records ids only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from slatectl.errors import BadInput
from slatectl.registry import Registry
from slatectl.train.inputs import GEMS_KIND, load_gems

#: Rows encoded per block: bounds memory (a 100k block is ~50 MB of activations) without per-row overhead.
ENCODE_BLOCK = 100_000
NO_ENCODER = "none"


@dataclass(frozen=True)
class DatasetEncoder:
    """A registered GeMS used as a dataset's feature map (see the module docstring for the equations)."""

    artifact_id: int
    sha256: str
    gems: Any  # slatectl.pretrain.gems.GeMS, frozen, in eval mode
    center: torch.Tensor
    scale: torch.Tensor

    @property
    def latent_dim(self) -> int:
        return int(self.gems.latent_dim)

    def describe(self) -> dict[str, Any]:
        """What the metadata records: enough to find and check the encoder again (its action box is in
        the artifact; the recorded actions are already normalised by it)."""
        return {"kind": GEMS_KIND, "artifact_id": self.artifact_id, "sha256": self.sha256,
                "latent_dim": self.latent_dim}

    def to(self, device: torch.device | str) -> "DatasetEncoder":
        return DatasetEncoder(self.artifact_id, self.sha256, self.gems.to(device), self.center.to(device),
                              self.scale.to(device))

    @torch.no_grad()
    def observation_features(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        mu, _ = self.gems.encode(slates, clicks)
        return mu

    @torch.no_grad()
    def action_features(self, slates: torch.Tensor) -> torch.Tensor:
        mu, _ = self.gems.encode(slates, torch.zeros_like(slates, dtype=torch.uint8))
        return ((mu - self.center) / self.scale).clamp(-1.0, 1.0)

    @torch.no_grad()
    def decode(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, d) actions in [−1, 1] (clipped) → (B, K) int64 item ids."""
        latent = self.center + self.scale * actions.to(self.center.dtype).clamp(-1.0, 1.0)
        return self.gems.rank(latent)


def load_encoder(registry: Registry, artifact_id: int, env: str, expected_sha256: str | None = None) -> DatasetEncoder:
    """The GeMS artifact `artifact_id` as an encoder for `env`: it must be a GeMS of that env, and (when
    given) have the SHA-256 a dataset recorded; the file's own hash is checked on reading."""
    artifact = registry.get_artifact(artifact_id)
    if artifact.kind != GEMS_KIND:
        raise BadInput(f"artifact {artifact_id} is a {artifact.kind!r} artifact, not a GeMS; an encoder is a "
                       f"GeMS (`slatectl pretrain gems --env {env}` makes one).")
    if artifact.env != env:
        raise BadInput(f"artifact {artifact_id} is the GeMS of {artifact.env}, not of {env}.")
    if expected_sha256 is not None and artifact.sha256 != expected_sha256:
        raise BadInput(f"encoder artifact {artifact_id} has SHA-256 {artifact.sha256}, but the dataset recorded "
                       f"{expected_sha256}: it is not the encoder the dataset was made with.")
    gems, (center, scale) = load_gems(registry, artifact)
    return DatasetEncoder(artifact.id, artifact.sha256, gems, center.float(), scale.float())


def default_encoder_id(registry: Registry, env: str, run_inputs: list[int] | None = None) -> int | None:
    """The env's encoder when none is named: the one its datasets already use (newest first), else the
    GeMS among the collecting run's inputs, else the env's newest GeMS; None when there is none."""
    for dataset in reversed(registry.list_datasets(env=env)):
        recorded = (dataset.meta or {}).get("encoder")
        if recorded and recorded.get("artifact_id") is not None:
            return int(recorded["artifact_id"])
    gems = {a.id for a in registry.list_artifacts(kind=GEMS_KIND, env=env)}
    for artifact_id in run_inputs or []:
        if artifact_id in gems:
            return artifact_id
    return max(gems) if gems else None


def resolve_encoder(registry: Registry, env: str, requested: int | str | None,
                    run_inputs: list[int] | None = None) -> DatasetEncoder | None:
    """`--encoder`: an artifact id, "none" (no continuous features), or None for the env's default."""
    if requested == NO_ENCODER:
        return None
    if requested is None:
        artifact_id = default_encoder_id(registry, env, run_inputs)
        if artifact_id is None:
            raise BadInput(f"no GeMS is registered for {env} to encode the dataset's continuous features. "
                           f"Pretrain one (`slatectl pretrain gems --env {env}`; a quick one: `--set "
                           f"logged.episodes=2000 --set max_epochs=2`), name one with --encoder ARTIFACT, or "
                           f"pass --encoder none to record item ids and clicks only.")
        return load_encoder(registry, artifact_id, env)
    try:
        artifact_id = int(requested)
    except ValueError:
        raise BadInput(f"--encoder takes a GeMS artifact id or 'none', not {requested!r}.") from None
    return load_encoder(registry, artifact_id, env)


def encode_arrays(arrays: dict[str, np.ndarray], encoder: DatasetEncoder | None) -> dict[str, np.ndarray]:
    """The encoder's feature arrays for a dataset's id arrays (`observations/*`, `actions/slate`,
    `final/*`); none without an encoder. Used by collection and by relabelling, so both give the same
    features."""
    if encoder is None:
        return {}
    encoder = encoder.to("cpu")
    return {
        "observations/latent": _blocks(lambda s, c: encoder.observation_features(s, c),
                                       arrays["observations/slate"], arrays["observations/clicks"]),
        "actions/latent": _blocks(lambda s: encoder.action_features(s), arrays["actions/slate"]),
        "final/latent": _blocks(lambda s, c: encoder.observation_features(s, c),
                                arrays["final/slate"], arrays["final/clicks"]),
    }


def _blocks(features, *inputs: np.ndarray) -> np.ndarray:
    rows = inputs[0].shape[0]
    parts = [features(*(torch.from_numpy(np.ascontiguousarray(a[start:start + ENCODE_BLOCK])) for a in inputs))
             for start in range(0, rows, ENCODE_BLOCK)]
    return torch.cat(parts).to(torch.float32).numpy() if parts else np.zeros((0, 0), np.float32)
