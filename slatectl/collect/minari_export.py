"""Export a collected dataset as a Minari dataset (HDF5 backend), loadable with `minari.load_dataset`.

Layout per episode (Minari keeps H + 1 observations, H actions/rewards):
  observations: {"slate" int16, "clicks" int8} (the env's gymnasium observation) plus "belief" (the belief state
                the agent acted on; the last row repeats the belief at H−1, which no action used)
  actions:      the slate of item ids; agents with a latent action (SAC+GeMS, SAC+TopK, SAC+WkNN) store
                {"slate", "latent"}
  rewards, terminations (all False), truncations (True at the last step: episodes end only by the H-step
                time limit, as the gymnasium env reports it)
  infos:        "user_state" (H + 1 rows) and "bored" (H + 1 rows, all False at reset)

The dataset id is `slatectl/<env>/<quality>-v<N>`, N one above the highest version already in the Minari
datasets folder (`MINARI_DATASETS_PATH`, default ~/.minari/datasets): nothing there is ever overwritten.
It is built in a scratch folder and moved into place whole, so a failure leaves nothing half-written.
The env id recorded is `slatectl/TopicRec-<env>-v0` (registered when `slatectl.sim` is imported), with
ref_min_score = the random policy's return and ref_max_score = the expert checkpoint's return.
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

import numpy as np
from gymnasium import spaces

from slatectl import __version__
from slatectl.errors import BadInput, JobFailed, write_failed
from slatectl.sim.gym_registration import gym_env_id
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
def _datasets_path(path: Path):
    """Minari reads its datasets folder from the environment at call time; point it at `path` briefly."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _spaces(env_cfg, belief_dim: int, latent_dim: int):
    K, N = env_cfg.slate_size, env_cfg.num_items
    # Compact integer types (as in the npz): the gymnasium env's int64 would make the file ~1.6× larger.
    observation = {"slate": spaces.Box(0, N - 1, shape=(K,), dtype=np.int16),
                   "clicks": spaces.Box(0, 1, shape=(K,), dtype=np.int8)}
    if belief_dim:
        observation["belief"] = spaces.Box(-np.inf, np.inf, shape=(belief_dim,), dtype=np.float32)
    slate = spaces.Box(-1, N - 1, shape=(K,), dtype=np.int16)
    action = spaces.Dict({"slate": slate, "latent": spaces.Box(-np.inf, np.inf, shape=(latent_dim,), dtype=np.float32)}) \
        if latent_dim else slate
    return spaces.Dict(observation), action


def _episode_buffers(arrays: dict[str, np.ndarray], episodes: int, horizon: int, seed: int):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    def per_episode(name, dtype=None):
        a = arrays[name]
        a = a.reshape(episodes, horizon, *a.shape[1:])
        return a.astype(dtype) if dtype is not None else a

    obs_slate, obs_clicks = per_episode("observations/slate", np.int16), per_episode("observations/clicks", np.int8)
    final_slate, final_clicks = per_episode("actions/slate", np.int16), arrays["final/clicks"].astype(np.int8)
    belief = per_episode("observations/belief", np.float32)
    act_slate, latent = per_episode("actions/slate", np.int16), per_episode("actions/latent", np.float32)
    rewards = per_episode("rewards", np.float64)
    user_state, final_user = per_episode("infos/user_state", np.float32), arrays["final/user_state"].astype(np.float32)
    bored = per_episode("infos/bored", np.bool_)
    terminations = np.zeros(horizon, dtype=np.bool_)
    truncations = np.zeros(horizon, dtype=np.bool_)
    truncations[-1] = True  # the time limit, not a terminal state
    buffers = []
    for e in range(episodes):
        observations = {"slate": np.concatenate([obs_slate[e], final_slate[e, -1:]]),
                        "clicks": np.concatenate([obs_clicks[e], final_clicks[e][None]])}
        if belief.shape[-1]:
            observations["belief"] = np.concatenate([belief[e], belief[e, -1:]])
        actions = {"slate": act_slate[e], "latent": latent[e]} if latent.shape[-1] else act_slate[e]
        infos = {"user_state": np.concatenate([user_state[e], final_user[e][None]]),
                 "bored": np.concatenate([np.zeros_like(bored[e, :1]), bored[e]])}
        buffers.append(EpisodeBuffer(id=e, seed=seed, observations=observations, actions=actions,
                                     rewards=rewards[e], terminations=terminations, truncations=truncations,
                                     infos=infos))
    return buffers


def export_minari(arrays: dict[str, np.ndarray], *, env_cfg, quality: str, episodes: int, seed: int,
                  scratch: Path, description: str, algorithm: str,
                  ref_min_score: float | None, ref_max_score: float | None,
                  root: Path | None = None) -> MinariExport:
    """Write `arrays` (the collector's, plus final/clicks and final/user_state) as a Minari dataset."""
    minari = _minari()
    # Both folders absolute: Minari re-joins relative paths with its datasets folder (they would be doubled).
    root = Path(root).expanduser().resolve() if root is not None else minari_root()
    horizon = env_cfg.episode_length
    observation_space, action_space = _spaces(env_cfg, arrays["observations/belief"].shape[-1],
                                               arrays["actions/latent"].shape[-1])
    dataset_id = next_dataset_id(root, env_cfg.name, quality)
    build_root = Path(scratch).resolve() / "minari"
    scores = {}
    if ref_min_score is not None and ref_max_score is not None:
        scores = {"ref_min_score": float(ref_min_score), "ref_max_score": float(ref_max_score)}

    def write() -> None:
        with _datasets_path(build_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # minari nags about author e-mail and code permalink
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=_episode_buffers(arrays, episodes, horizon, seed),
                env=gym_env_id(env_cfg.name), observation_space=observation_space, action_space=action_space,
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
