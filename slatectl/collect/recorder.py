"""Play the collecting agent in the simulator, batch after batch of users, straight into the dataset's arrays.

The arrays of the whole dataset (T = N·H rows, episode-major, the dtypes of the file) are allocated once
on the host. A batch of B users owns the contiguous rows first·H … (first+B)·H − 1 of every array, so:

- on a CPU the step loop writes into views of those host arrays (no copies at all);
- on another device (CUDA) it writes into device buffers allocated once for the largest batch; when the
  batch is done they are copied to pinned host memory in one block per array (asynchronously), and the
  host copies them into the dataset while the device already runs the next batch. The step loop itself
  never waits for the device: the only waits are one per batch, for the previous batch's copy.

The agent acts in its stacked form with one member (the form every agent trains in), through the steps
every population loop takes (`slatectl.train.episodes`).

On a CPU with N ≥ 2 torch threads the batches are shared out over N worker threads, each with its own
copy of the simulator and the agent and one torch thread, writing its own rows: every op of a batch then
runs on one core, the small per-user ops of the simulator included (torch runs an op under ~32k elements on
one thread, so one loop with N threads leaves the other cores idle there). A batch's records depend only on
its users, the seed and the weights (and, for the stochastic policy, its own generator), so the arrays
are the same whatever the split (tested), for both behaviour policies.

The progress callback sees a batch once its data is on the host (one batch late on a GPU; in completion
order with several workers).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from slatectl.agents.base import ActMode
from slatectl.agents.stacked import StackedAgent
from slatectl.sim.member_envs import MemberEnvs
from slatectl.sim.topicrec import TopicRec
from slatectl.train.episodes import begin_member_episodes, member_step

#: Per-step arrays (one row per transition): name → (dtype, width attribute of `_Widths`).
STEP_ARRAYS = {
    "observations/slate": (torch.int16, "slate"),
    "observations/clicks": (torch.uint8, "slate"),
    "actions/slate": (torch.int16, "slate"),
    "agent/belief": (torch.float32, "belief"),
    "agent/latent": (torch.float32, "action"),
    "rewards": (torch.float32, None),
    "infos/user_state": (torch.float32, "user"),
    "infos/bored": (torch.bool, "topics"),
}
#: Smallest batch (users) recorded by parallel workers by default: below it the ops are so small that the
#: workers' Python overhead, serialised by the GIL, costs more than running one op on each core gains
#: (2 workers × 1 thread against one loop with 2 threads, 2-core CPU: random policy 0.74× at 500 users,
#: 0.97× at 2,000, 1.13× at 5,000; SAC+GeMS 1.15× at 500, 1.18× at 2,000, 1.28× at 5,000).
MIN_PARALLEL_BATCH = 2000
#: Per-episode arrays (one row per episode).
EPISODE_ARRAYS = {
    "final/slate": (torch.int16, "slate"),
    "final/clicks": (torch.uint8, "slate"),
    "final/user_state": (torch.float32, "user"),
}


@dataclass(frozen=True)
class _Widths:
    slate: int
    belief: int
    action: int
    user: int
    topics: int

    def shape(self, attribute: str | None) -> tuple[int, ...]:
        return () if attribute is None else (getattr(self, attribute),)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype, device="cpu").numpy().dtype


class _Arrays:
    """The dataset's host arrays and, per batch, where the step loop writes (host views or device buffers)."""

    def __init__(self, episodes: int, horizon: int, widths: _Widths, device: torch.device, batch_size: int,
                 staged: bool):
        self.horizon = horizon
        self.host = {name: np.empty((episodes * horizon, *widths.shape(width)), dtype=_numpy_dtype(dtype))
                     for name, (dtype, width) in STEP_ARRAYS.items()}
        self.host.update({name: np.empty((episodes, *widths.shape(width)), dtype=_numpy_dtype(dtype))
                          for name, (dtype, width) in EPISODE_ARRAYS.items()})
        self.staged = staged
        self._pending: tuple[int, int, object] | None = None
        if staged:
            pin = device.type == "cuda"
            specs = {**{n: (d, (batch_size, horizon, *widths.shape(w))) for n, (d, w) in STEP_ARRAYS.items()},
                     **{n: (d, (batch_size, *widths.shape(w))) for n, (d, w) in EPISODE_ARRAYS.items()}}
            self.device_buffers = {n: torch.empty(shape, dtype=d, device=device) for n, (d, shape) in specs.items()}
            self.pinned = {n: torch.empty(shape, dtype=d, device="cpu", pin_memory=pin) for n, (d, shape) in specs.items()}

    def _host_views(self, first: int, batch: int) -> dict[str, torch.Tensor]:
        H = self.horizon
        views = {name: torch.from_numpy(self.host[name][first * H:(first + batch) * H]).view(batch, H, *self.host[name].shape[1:])
                 for name in STEP_ARRAYS}
        views.update({name: torch.from_numpy(self.host[name][first:first + batch]) for name in EPISODE_ARRAYS})
        return views

    def batch_targets(self, first: int, batch: int) -> dict[str, torch.Tensor]:
        """Where batch [first, first + batch) is recorded: (B, H, ·) step arrays, (B, ·) episode arrays."""
        if not self.staged:
            return self._host_views(first, batch)
        return {name: buffer[:batch] for name, buffer in self.device_buffers.items()}

    def submit(self, first: int, batch: int) -> tuple[int, int] | None:
        """The batch's recording is queued: start its copy to the host. Returns the batch that is now on
        the host (first, size), if any: this one on a CPU, the previous one on a GPU."""
        if not self.staged:
            return first, batch
        landed = self.drain()
        for name, buffer in self.device_buffers.items():
            self.pinned[name][:batch].copy_(buffer[:batch], non_blocking=True)
        event = torch.cuda.Event() if buffer.device.type == "cuda" else None
        if event is not None:
            event.record()
        self._pending = (first, batch, event)
        return landed

    def drain(self) -> tuple[int, int] | None:
        """Wait for the batch being copied, if any, and move it into the dataset's arrays."""
        if self._pending is None:
            return None
        first, batch, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        for name, target in self._host_views(first, batch).items():
            target.copy_(self.pinned[name][:batch])
        return first, batch


@torch.no_grad()
def record_dataset(env: TopicRec, agent: StackedAgent, episodes: int, seed: int, batch_size: int,
                   on_batch: Callable[[int, float], None] | None = None, staged: bool | None = None,
                   workers: int | None = None, mode: ActMode = "greedy") -> dict[str, np.ndarray]:
    """Users 0 … episodes−1 of `seed`, `batch_size` at a time, the agent acting in `mode`; the dataset's arrays.

    `agent` is the collecting agent in its stacked form with one member (`stacked_form`), driven through
    the steps every population loop takes (`slatectl.train.episodes`). `mode` "greedy" is the
    agent's deterministic evaluation policy, "explore" its stochastic policy as trained (SAC's squashed
    Gaussian, SlateQ's ε-greedy, REINFORCE's softmax draws). Greedy records depend only on the users, the
    seed and the weights. The stochastic policy draws from a `torch.Generator` of the batch, seeded from
    (seed, first user) (`batch_rng_seed`): the same seed and batch size give the same file, whichever
    worker records a batch and however many there are (nothing is drawn from torch's global RNG).

    The simulator and the agent must be on the same device. `staged` (default: off the CPU) records into
    device buffers copied to the host per batch; tests force it on a CPU to run that path. `workers`
    (default: the torch threads on a CPU for batches of at least MIN_PARALLEL_BATCH users, at most one per
    batch; 1 elsewhere) is how many batches are recorded at once, each by its own copy of the simulator and
    agent with threads/workers torch threads.
    """
    if agent.K != 1:
        raise ValueError(f"collection records one policy: a stacked agent of one member, not {agent.K}")
    H, device = env.config.episode_length, env.device
    envs = MemberEnvs([env])
    staged = device.type != "cpu" if staged is None else staged
    batches = [(first, min(batch_size, episodes - first)) for first in range(0, episodes, batch_size)]
    if workers is None:
        parallel = device.type == "cpu" and not staged and batch_size >= MIN_PARALLEL_BATCH
        workers = torch.get_num_threads() if parallel else 1
    workers = max(1, min(workers, len(batches)))
    if staged and workers > 1:
        raise ValueError("staged recording (device buffers) runs one batch at a time")
    arrays = _Arrays(episodes, H, _widths(envs, agent, seed), device, batches[0][1], staged)
    progress = _Progress(arrays, on_batch)
    if workers == 1:
        with _one_cpu_thread(device):
            for first, size in batches:
                _record_batch(envs, agent, seed, arrays.batch_targets(first, size), first, size, mode)
                progress.landed(arrays.submit(first, size))
        progress.landed(arrays.drain())
    else:
        _record_in_parallel(envs, agent, seed, arrays, batches, workers, progress, mode)
    return arrays.host


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """One torch thread while a single loop records on the CPU: with several, the kernels split a batch's
    rows by thread and round the beliefs differently for different batch sizes (measured at 2 threads:
    1e-6 differences, so another file), and the file must not depend on --batch or --threads. Several
    batches at once (worker threads, one torch thread each) are how the CPU's cores are used."""
    before = torch.get_num_threads()
    if device.type == "cpu" and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def batch_rng_seed(seed: int, first_user: int) -> int:
    """The seed of the stochastic policy's generator for the batch starting at `first_user` (a 63-bit mix,
    so neighbouring seeds and batches get unrelated streams)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + first_user * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    mixed ^= mixed >> 31
    return mixed % (1 << 63)


def batch_generator(seed: int, first_user: int) -> torch.Generator:
    """The batch's generator, on the host: the draws (a few per user and step) are the same on every
    device, and a CUDA run of the stochastic policy draws what a CPU run draws."""
    return torch.Generator().manual_seed(batch_rng_seed(seed, first_user))


def _widths(envs: MemberEnvs, agent: StackedAgent, seed: int) -> _Widths:
    """The record widths, read from a one-user episode start (draws are counter-based, and every batch
    starts its own episodes, so this changes nothing that is recorded)."""
    one_user = torch.zeros(1, dtype=torch.int64, device=envs.device)
    begin_member_episodes(envs, agent, one_user, [seed])
    cfg = envs.config
    return _Widths(cfg.slate_size, agent.belief_state().shape[-1], agent.action_dim, cfg.embedding_dim, cfg.num_topics)


def _record_batch(envs: MemberEnvs, agent: StackedAgent, seed: int, out: dict[str, torch.Tensor], first: int, B: int,
                  mode: ActMode = "greedy") -> None:
    """Play users first … first+B−1 for one episode, writing every record into `out` ((B, H, ·) step
    arrays, (B, ·) episode arrays). The agent has one member: its records are row 0 of the (1, B, ·) ones."""
    H = envs.config.episode_length
    generators = [batch_generator(seed, first)]
    reset = begin_member_episodes(envs, agent, torch.arange(first, first + B, device=envs.device), [seed])
    out["observations/slate"][:, 0] = reset.slate[0]
    out["observations/clicks"][:, 0] = reset.clicks[0]
    out["infos/user_state"][:, 0] = envs.user_states()[0]
    record_belief = out["agent/belief"].shape[-1] > 0
    for t in range(H):
        if record_belief:
            out["agent/belief"][:, t] = agent.belief_state()[0]
        action, result = member_step(envs, agent, mode, generators)
        shown = result.observation
        out["actions/slate"][:, t] = shown.slate[0]
        if agent.action_dim:
            out["agent/latent"][:, t] = action[0]
        out["rewards"][:, t] = result.reward[0]
        out["infos/bored"][:, t] = result.bored[0]
        if t + 1 < H:
            out["observations/slate"][:, t + 1] = shown.slate[0]
            out["observations/clicks"][:, t + 1] = shown.clicks[0]
            out["infos/user_state"][:, t + 1] = result.user_state[0]
        else:
            out["final/slate"][:] = shown.slate[0]
            out["final/clicks"][:] = shown.clicks[0]
            out["final/user_state"][:] = result.user_state[0]


def _record_in_parallel(envs: MemberEnvs, agent: StackedAgent, seed: int, arrays: _Arrays,
                        batches: list[tuple[int, int]], workers: int, progress: "_Progress",
                        mode: ActMode) -> None:
    """Worker w records batches w, w + workers, … with its own simulator and agent (copies: both hold the
    state of the episodes they play) into its own rows of the host arrays; each batch draws from its own
    generator, so which worker records it changes nothing. The torch thread count is process-wide, so it
    is lowered before the workers start (a new thread takes the count current at its first parallel op)
    and restored after; a failing worker, or Ctrl-C, stops the others at their next batch."""
    players = [(envs, agent)] + [(copy.deepcopy(envs), copy.deepcopy(agent)) for _ in range(workers - 1)]
    failed = threading.Event()

    def work(player_envs: MemberEnvs, player_agent: StackedAgent, mine: list[tuple[int, int]]) -> None:
        try:
            with torch.no_grad():  # grad mode is per thread
                for first, size in mine:
                    if failed.is_set():
                        return
                    _record_batch(player_envs, player_agent, seed, arrays.batch_targets(first, size), first, size,
                                  mode)
                    progress.landed(arrays.submit(first, size))
        except BaseException:
            failed.set()
            raise

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads_before // workers))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recorder") as pool:
            futures = [pool.submit(work, e, a, batches[w::workers]) for w, (e, a) in enumerate(players)]
            try:
                for future in futures:
                    future.result()  # re-raises a worker's error here
            except BaseException:  # a worker's error or Ctrl-C: the others stop at their next batch
                failed.set()
                raise
    finally:
        torch.set_num_threads(threads_before)


class _Progress:
    """Reports landed batches to the callback, one at a time (workers call it from their threads)."""

    def __init__(self, arrays: _Arrays, on_batch: Callable[[int, float], None] | None) -> None:
        self.arrays, self.on_batch = arrays, on_batch
        self.done = 0
        self.lock = threading.Lock()

    def landed(self, batch: tuple[int, int] | None) -> None:
        if batch is None:
            return
        first, size = batch
        with self.lock:
            self.done += size
            if self.on_batch is not None:
                H = self.arrays.horizon
                rewards = self.arrays.host["rewards"][first * H:(first + size) * H]
                self.on_batch(self.done, float(rewards.reshape(size, -1).sum(axis=1).mean()))
