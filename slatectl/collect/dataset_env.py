"""The environment in a dataset's own spaces: where a policy trained offline on the dataset is evaluated.

A dataset's observation is {slate, clicks, latent} and its action is either the encoder's latent action
in [−1, 1]^d (`action="latent"`, the default when the dataset has an encoder) or the slate of item ids
(`action="slate"`); see slatectl/collect/encoder.py for what the latent features are. This module holds
the one observation/action mapping used by both faces of that environment:

- `DatasetEnv`, a gymnasium env of one user at a time (`slatectl.make_env(dataset=…)`, and the `eval_env`
  recorded in Minari exports so `dataset.recover_environment(eval_env=True)` rebuilds it);
- `SpaceMapping.play`, many users at once on the batched simulator (`slatectl evaluate`).

The encoder is loaded from the registry (found as the CLI finds it: SLATECTL_HOME, SLATECTL_REGISTRY_URL,
or `home=` / `registry_url=`) and its SHA-256 must match the one the dataset recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from slatectl.collect.encoder import DatasetEncoder, load_encoder
from slatectl.collect.npz import read_npz_metadata
from slatectl.errors import BadInput
from slatectl.registry import Registry, open_registry
from slatectl.settings import Settings
from slatectl.sim.config import EnvConfig, load_env_config
from slatectl.sim.factory import make_env as make_simulator
from slatectl.sim.topicrec import Observation

#: One dtype per field, the same in the npz, the Minari export and the gymnasium env (docs/offline.md).
SLATE_DTYPE, CLICKS_DTYPE, FLOAT_DTYPE = np.int16, np.uint8, np.float32
ACTION_KINDS = ("latent", "slate")
#: The gymnasium id recorded as a Minari dataset's eval_env (kwargs name the env and the encoder).
DATASET_ENV_ID = "slatectl/TopicRecDataset-v0"
ENTRY_POINT = "slatectl.collect.dataset_env:DatasetEnv"


def observation_space(config: EnvConfig, latent_dim: int | None) -> spaces.Dict:
    K, N = config.slate_size, config.num_items
    fields = {"slate": spaces.Box(0, N - 1, shape=(K,), dtype=SLATE_DTYPE),
              "clicks": spaces.Box(0, 1, shape=(K,), dtype=CLICKS_DTYPE)}
    if latent_dim:
        fields["latent"] = spaces.Box(-np.inf, np.inf, shape=(latent_dim,), dtype=FLOAT_DTYPE)
    return spaces.Dict(fields)


def action_space(config: EnvConfig, latent_dim: int | None, action: str) -> spaces.Box:
    if action == "latent":
        return spaces.Box(-1.0, 1.0, shape=(latent_dim,), dtype=FLOAT_DTYPE)
    return spaces.Box(0, config.num_items - 1, shape=(config.slate_size,), dtype=SLATE_DTYPE)


@dataclass
class SpaceMapping:
    """A dataset's observation and action spaces over the simulator: observation → dict of arrays,
    action → slate of item ids."""

    config: EnvConfig
    encoder: DatasetEncoder | None
    action: str

    def __post_init__(self) -> None:
        if self.action not in ACTION_KINDS:
            raise BadInput(f"action must be one of {', '.join(ACTION_KINDS)}, not {self.action!r}.")
        if self.action == "latent" and self.encoder is None:
            raise BadInput("this dataset has no encoder, so it has no latent action; use action='slate'.")

    @property
    def latent_dim(self) -> int | None:
        return self.encoder.latent_dim if self.encoder is not None else None

    def observation(self, observation: Observation) -> dict[str, np.ndarray]:
        """(B, ·) arrays of the observation, in the dataset's dtypes."""
        fields = {"slate": observation.slate.cpu().numpy().astype(SLATE_DTYPE),
                  "clicks": observation.clicks.cpu().numpy().astype(CLICKS_DTYPE)}
        if self.encoder is not None:
            fields["latent"] = self.encoder.observation_features(observation.slate.cpu(), observation.clicks.cpu()).numpy()
        return fields

    def slates(self, actions: Any, batch: int) -> torch.Tensor:
        """(B, K) int64 item ids for `batch` actions in the dataset's action space; BadInput otherwise."""
        try:
            actions = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"the policy returned something that is not an array of actions: {exc}") from exc
        if self.action == "latent":
            shape = (batch, self.latent_dim)
            if actions.shape != shape or not np.issubdtype(actions.dtype, np.number) or not np.isfinite(actions).all():
                raise BadInput(f"latent actions must be finite numbers of shape {shape}, got {actions.dtype} {actions.shape}.")
            return self.encoder.decode(torch.from_numpy(actions.astype(FLOAT_DTYPE)))
        K, N = self.config.slate_size, self.config.num_items
        if actions.shape != (batch, K) or not np.issubdtype(actions.dtype, np.integer) \
                or actions.min() < 0 or actions.max() >= N:
            raise BadInput(f"slate actions must be integer item ids in [0, {N - 1}] of shape {(batch, K)}, "
                           f"got {actions.dtype} {actions.shape}.")
        return torch.from_numpy(actions.astype(np.int64))

    def play(self, policy: Callable[[dict[str, np.ndarray]], Any], users: int, seed: int,
             batch_size: int = 500) -> np.ndarray:
        """Returns of users 0 … users−1 of `seed` under `policy` (batched observation dict → actions)."""
        sim = make_simulator(self.config)
        returns = []
        for first in range(0, users, batch_size):
            size = min(batch_size, users - first)
            observation = sim.reset(torch.arange(first, first + size), seed)
            total = torch.zeros(size, dtype=torch.float64)
            for _ in range(self.config.episode_length):
                result = sim.step(self.slates(policy(self.observation(observation)), size), oracle=False)
                total += result.reward.double().cpu()
                observation = result.observation
            returns.append(total.numpy())
        return np.concatenate(returns)


class DatasetEnv(gym.Env):
    """One simulated user at a time, in a dataset's spaces. Users are numbered as in the raw env: a
    `reset(seed=s)` starts user 0 of seed s, each later reset the next user.

    Building it touches no torch state: the spaces come from the arguments, and the encoder (read from
    the registry, SHA-256 checked) and the simulator are loaded by `load()`, which the first `reset`
    calls (`make_env` calls it at once, so a missing or changed encoder fails there). Minari builds the
    env while exporting, in a forked child process, where torch's thread pools must not be used."""

    metadata = {"render_modes": []}

    def __init__(self, env_name: str, encoder_artifact_id: int | None = None, encoder_sha256: str | None = None,
                 action: str | None = None, home: str | None = None, registry_url: str | None = None,
                 latent_dim: int | None = None):
        self.config = load_env_config(env_name)
        self._encoder_ref = (int(encoder_artifact_id), encoder_sha256) if encoder_artifact_id is not None else None
        self._registry = (home, registry_url)
        self.mapping: SpaceMapping | None = None
        self.sim = None
        action = action or ("latent" if self._encoder_ref is not None else "slate")
        if latent_dim is None and self._encoder_ref is not None:
            self.load(action)  # no size given: the encoder says it
            latent_dim = self.mapping.latent_dim
        if action not in ACTION_KINDS or (action == "latent" and self._encoder_ref is None):
            SpaceMapping(self.config, None, action)  # raises the one message for a bad action
        self._action, self._latent_dim = action, latent_dim
        self.observation_space = observation_space(self.config, latent_dim)
        self.action_space = action_space(self.config, latent_dim, action)
        self._seed, self._next_user = 0, 0

    def load(self, action: str | None = None) -> "DatasetEnv":
        """Load the encoder (SHA-256 checked against the dataset's record) and the simulator, once."""
        if self.mapping is None:
            encoder = None
            if self._encoder_ref is not None:
                home, registry_url = self._registry
                with open_registry(Settings.resolve(home=home, registry_url=registry_url)) as registry:
                    encoder = load_encoder(registry, self._encoder_ref[0], self.config.name, self._encoder_ref[1])
            self.mapping = SpaceMapping(self.config, encoder, action or self._action)
            self.sim = make_simulator(self.config)
        return self

    def _observation(self, observation: Observation) -> dict[str, np.ndarray]:
        return {name: values[0] for name, values in self.mapping.observation(observation).items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.load()
        if seed is not None:
            self._seed, self._next_user = int(seed), 0
        observation = self.sim.reset(torch.tensor([self._next_user]), self._seed)
        self._next_user += 1
        return self._observation(observation), {"user_state": self.sim.user[0].numpy().copy()}

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        slate = self.mapping.slates(np.asarray(action)[None], 1)
        result = self.sim.step(slate, oracle=False)
        info = {"user_state": result.user_state[0].numpy().copy(), "bored": result.bored[0].numpy().copy(),
                "slate": slate[0].numpy().astype(SLATE_DTYPE)}
        # Episodes end only by the time limit: truncated, never terminated (as in the dataset's timeouts).
        return self._observation(result.observation), FLOAT_DTYPE(result.reward[0]), False, bool(result.done), info


def dataset_env_kwargs(env_name: str, encoder: dict | None, action: str | None = None) -> dict[str, Any]:
    """DatasetEnv's keyword arguments for a dataset's `env` and recorded `encoder` (JSON-serialisable, so
    Minari can store them in the eval_env spec)."""
    return {"env_name": env_name, "encoder_artifact_id": encoder["artifact_id"] if encoder else None,
            "encoder_sha256": encoder["sha256"] if encoder else None, "action": action,
            "latent_dim": encoder["latent_dim"] if encoder else None}


def dataset_metadata(registry: Registry | None, dataset: int | str | Path) -> dict[str, Any]:
    """The metadata of a registered dataset id, or of an npz file given by its path."""
    if isinstance(dataset, int) or (isinstance(dataset, str) and dataset.isdigit()):
        if registry is None:
            raise BadInput("a dataset id needs the registry")
        return dict(registry.get_dataset(int(dataset)).meta or {})
    path = Path(dataset).expanduser()
    if not path.is_file():
        raise BadInput(f"{path} is neither a dataset id nor an npz dataset file.")
    return read_npz_metadata(path)


def check_layout(metadata: dict[str, Any], what: str) -> None:
    if metadata.get("format_version", 1) < 2:
        raise BadInput(f"{what} has the old layout (each dataset its own agent's belief and latent); relabel it "
                       f"with `slatectl relabel ID` to give it the env's spaces.")


def make_env(dataset: int | str | Path, action: str | None = None, home: str | Path | None = None,
             registry_url: str | None = None) -> DatasetEnv:
    """A gymnasium env whose observation and action spaces, and their meaning, are exactly the dataset's
    (`dataset`: a registered dataset id or the path of an npz dataset file)."""
    settings = Settings.resolve(home=home, registry_url=registry_url)
    with open_registry(settings) as registry:
        metadata = dataset_metadata(registry, dataset)
    check_layout(metadata, f"dataset {dataset}")
    kwargs = dataset_env_kwargs(metadata["env"], metadata.get("encoder"), action)
    return DatasetEnv(**kwargs, home=str(settings.home), registry_url=settings.registry_url).load()


def register_dataset_env() -> None:
    if DATASET_ENV_ID not in gym.envs.registry:
        gym.register(id=DATASET_ENV_ID, entry_point=ENTRY_POINT)
