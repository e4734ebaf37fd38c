"""Export a collected dataset as a Minari dataset (HDF5 backend), loadable with `minari.load_dataset`.

Layout per episode (Minari keeps H + 1 observations, H actions/rewards), in the dtypes of the npz and of
the gymnasium env (slatectl/collect/dataset_env.py, docs/offline.md):
  observations: {"slate" int16, "clicks" uint8, "latent" float32 (the encoder's features; absent without
                an encoder)}: the dataset's observation space, the same for every quality and agent
  actions:      the encoder's latent action in [−1, 1]^d (float32), or the slate of item ids (int16) for a
                dataset without an encoder; the slate recommended is also the next observation's slate
  rewards (float32), terminations (all False), truncations (True at the last step: episodes end only by
                the H-step time limit, as the gymnasium env reports it)
  infos:        "user_state" and "bored" (H + 1 rows, bored all False at reset); the collecting agent's
                extras "agent_belief" (row t = the belief o_t was acted on; the last row repeats row H−1)
                and "agent_latent" (row t + 1 = its raw action at step t; row 0 zeros)

The dataset id is `slatectl/<env>/<quality>-v<N>`, N one above the highest version already in the Minari
datasets folder (`MINARI_DATASETS_PATH`, default ~/.minari/datasets): nothing there is ever overwritten.
It is built in a scratch folder and moved into place whole, so a failure leaves nothing half-written.
The env recorded (and the eval env) is the dataset's own: `slatectl/TopicRecDataset-v0` with the env and
the encoder (id and SHA-256) as kwargs, so where slatectl is installed `dataset.recover_environment()`
gives an env in the dataset's spaces (the raw env stays `gymnasium.make("slatectl/TopicRec-<env>-v0")`).
ref_min_score = the random policy's return and ref_max_score = the expert checkpoint's return (or the
best trained checkpoint's when no expert is promoted; the description says which).
No remote is recorded (the dataset is local only). `minari show` (Minari 0.5) nevertheless prints a
"Download: minari download <id>" row for every dataset, local ones included: the row is hard-coded in
Minari's table, not derived from any metadata field, so it cannot be turned off from here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import resource
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from slatectl import __version__
from slatectl.collect.dataset_env import (CLICKS_DTYPE, DATASET_ENV_ID, FLOAT_DTYPE, SLATE_DTYPE, action_space,
                                          dataset_env_kwargs, observation_space, register_dataset_env)
from slatectl.errors import BadInput, JobFailed, write_failed
from slatectl.storage.atomic import install_tree


@dataclass(frozen=True)
class MinariExport:
    dataset_id: str
    path: Path
    ref_min_score: float | None
    ref_max_score: float | None


def _minari():
    try:
        import minari
    except ImportError as exc:  # minari is a dependency; a broken install gets a clear message
        raise BadInput(f"--format minari needs the minari package with h5py ({exc}); "
                       "install it with `pip install 'minari[hdf5]'`.") from exc
    return minari


def minari_root() -> Path:
    """Minari's datasets folder, absolute (a relative MINARI_DATASETS_PATH is taken from the working directory)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets").expanduser().resolve()


def next_dataset_id(root: Path, env: str, quality: str) -> str:
    folder = root / "slatectl" / env
    versions = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else [])
                if (m := re.fullmatch(rf"{quality}-v(\d+)", p.name))]
    return f"slatectl/{env}/{quality}-v{max(versions, default=0) + 1}"


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables briefly. Minari reads its datasets folder from the environment at call
    time, and builds the eval env (which finds the registry as the CLI does) to check its spaces."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _episode_buffers(arrays: dict[str, np.ndarray], episodes: int, horizon: int, seed: int, latent: bool):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    def per_episode(name, dtype):
        a = arrays[name]
        return a.reshape(episodes, horizon, *a.shape[1:]).astype(dtype, copy=False)

    def finals(name, dtype):
        return arrays[name].astype(dtype, copy=False)[:, None]

    obs = {"slate": (per_episode("observations/slate", SLATE_DTYPE), finals("final/slate", SLATE_DTYPE)),
           "clicks": (per_episode("observations/clicks", CLICKS_DTYPE), finals("final/clicks", CLICKS_DTYPE))}
    if latent:
        obs["latent"] = (per_episode("observations/latent", FLOAT_DTYPE), finals("final/latent", FLOAT_DTYPE))
    actions = per_episode("actions/latent" if latent else "actions/slate", FLOAT_DTYPE if latent else SLATE_DTYPE)
    rewards = per_episode("rewards", FLOAT_DTYPE)
    user_state, final_user = per_episode("infos/user_state", FLOAT_DTYPE), finals("final/user_state", FLOAT_DTYPE)
    bored = per_episode("infos/bored", np.bool_)
    belief = per_episode("agent/belief", FLOAT_DTYPE) if "agent/belief" in arrays else None
    agent_latent = per_episode("agent/latent", FLOAT_DTYPE) if "agent/latent" in arrays else None
    terminations = np.zeros(horizon, dtype=np.bool_)
    truncations = np.zeros(horizon, dtype=np.bool_)
    truncations[-1] = True  # the time limit, not a terminal state
    buffers = []
    for e in range(episodes):
        infos = {"user_state": np.concatenate([user_state[e], final_user[e]]),
                 "bored": np.concatenate([np.zeros_like(bored[e, :1]), bored[e]])}
        if belief is not None:
            infos["agent_belief"] = np.concatenate([belief[e], belief[e, -1:]])
        if agent_latent is not None:
            infos["agent_latent"] = np.concatenate([np.zeros_like(agent_latent[e, :1]), agent_latent[e]])
        buffers.append(EpisodeBuffer(id=e, seed=seed, observations={k: np.concatenate([steps[e], last[e]]) for k, (steps, last) in obs.items()},
                                     actions=actions[e], rewards=rewards[e], terminations=terminations,
                                     truncations=truncations, infos=infos))
    return buffers


def export_minari(arrays: dict[str, np.ndarray], *, env_cfg, quality: str, episodes: int, seed: int,
                  scratch: Path, description: str, algorithm: str, encoder: dict | None,
                  ref_min_score: float | None, ref_max_score: float | None, registry_home: Path,
                  registry_url: str, root: Path | None = None) -> MinariExport:
    """Write `arrays` (the collector's, episode ends included) as a Minari dataset; `encoder` is the
    metadata's record of the dataset's encoder (None: no latent features), held in the registry at
    `registry_home` / `registry_url`. The eval env records no path: where it is rebuilt, it finds the
    registry as the CLI does (SLATECTL_HOME, SLATECTL_REGISTRY_URL)."""
    minari = _minari()
    # Both folders absolute: Minari re-joins relative paths with its datasets folder (they would be doubled).
    root = Path(root).expanduser().resolve() if root is not None else minari_root()
    horizon = env_cfg.episode_length
    latent_dim = encoder["latent_dim"] if encoder else None
    observations, actions = observation_space(env_cfg, latent_dim), action_space(env_cfg, latent_dim, "latent" if encoder else "slate")
    register_dataset_env()
    env_spec = EnvSpec(id=DATASET_ENV_ID, entry_point=gym.spec(DATASET_ENV_ID).entry_point, max_episode_steps=horizon,
                       kwargs=dataset_env_kwargs(env_cfg.name, encoder))
    dataset_id = next_dataset_id(root, env_cfg.name, quality)
    build_root = Path(scratch).resolve() / "minari"
    scores = {}
    if ref_min_score is not None and ref_max_score is not None:
        scores = {"ref_min_score": float(ref_min_score), "ref_max_score": float(ref_max_score)}

    def write() -> None:
        with _environment(MINARI_DATASETS_PATH=str(build_root), SLATECTL_HOME=str(Path(registry_home).resolve()),
                          SLATECTL_REGISTRY_URL=registry_url), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # minari nags about author e-mail and code permalink
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=_episode_buffers(arrays, episodes, horizon, seed, latent=encoder is not None),
                env=env_spec, eval_env=env_spec, observation_space=observations, action_space=actions,
                algorithm_name=algorithm, author="slatectl", description=description,
                code_permalink=f"slatectl {__version__}", data_format="hdf5",
                requirements=[f"slatectl=={__version__}"], **scores)

    write_in_child(write, build_root)
    target = root / dataset_id
    try:
        install_tree(build_root / dataset_id, target)
    except FileExistsError as exc:
        raise BadInput(f"a Minari dataset {dataset_id} appeared in {root} while collecting; nothing was written.") from exc
    except OSError as exc:  # install_tree removed its staging copy
        raise write_failed(target, exc, "nothing was written there or registered") from exc
    return MinariExport(dataset_id, target, scores.get("ref_min_score"), scores.get("ref_max_score"))


def write_in_child(write: Callable[[], None], folder: Path) -> None:
    """Run `write` (the HDF5 export) in a forked child and raise one JobFailed if it fails.

    When a write fails (disk full, `ulimit -f`), h5py prints a traceback for every object it frees and
    HDF5 then crashes the process while closing the file (a segmentation fault inside h5py). In a child
    that crash is contained: the parent reports one message and its caller removes the scratch folder.
    The child inherits the arrays by fork (nothing is copied) and sends back only its error text.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)  # h5py's per-object tracebacks; the first error goes back through the pipe
        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            send.send(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            os._exit(1)
        send.send(None)

    process = context.Process(target=child, name="minari-writer")
    process.start()
    send.close()
    try:
        process.join()
    finally:
        if process.is_alive():  # the parent was interrupted: stop the writer before its folder is removed
            process.terminate()
            process.join()
    try:
        error = receive.recv()
    except EOFError:  # the child died before it could say anything
        error = "no error reported"
    receive.close()
    if process.exitcode == 0 and error is None:
        return
    if process.exitcode is not None and process.exitcode < 0:
        error = f"the HDF5 writer was killed by {signal.Signals(-process.exitcode).name}"
    raise JobFailed(f"could not write the Minari dataset in {folder} ({error}); {_write_limits(folder)} nothing was "
                    "written or registered. Free disk space (or raise `ulimit -f`) and run the command again.")


def _write_limits(folder: Path) -> str:
    """What usually makes an HDF5 write fail: the free space there and the process's file-size limit."""
    facts = []
    with contextlib.suppress(OSError):
        facts.append(f"{shutil.disk_usage(folder if folder.exists() else folder.parent).free / 1e6:,.0f} MB free there")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        facts.append(f"file-size limit (ulimit -f) {limit / 1e6:,.1f} MB")
    return f"{', '.join(facts)};" if facts else ""
