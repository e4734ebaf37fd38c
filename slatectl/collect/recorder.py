"""Play the collecting agent in the simulator, batch after batch of users, straight into the dataset's arrays.

The arrays of the whole dataset (T = N·H rows, episode-major, the dtypes of the file) are allocated once
on the host. A batch of B users owns the contiguous rows first·H … (first+B)·H − 1 of every array, so:

- on a CPU the step loop writes into views of those host arrays (no copies at all);
- on another device (CUDA) it writes into device buffers allocated once for the largest batch; when the
  batch is done they are copied to pinned host memory in one block per array (asynchronously), and the
  host copies them into the dataset while the device already runs the next batch. The step loop itself
  never waits for the device: the only waits are one per batch, for the previous batch's copy.

The progress callback sees a batch once its data is on the host (one batch late on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from slatectl.agents.base import Agent
from slatectl.sim.topicrec import TopicRec

#: Per-step arrays (one row per transition): name → (dtype, width attribute of `_Widths`).
STEP_ARRAYS = {
    "observations/slate": (torch.int16, "slate"),
    "observations/clicks": (torch.uint8, "slate"),
    "observations/belief": (torch.float32, "belief"),
    "actions/slate": (torch.int16, "slate"),
    "actions/latent": (torch.float32, "action"),
    "rewards": (torch.float32, None),
    "infos/user_state": (torch.float32, "user"),
    "infos/bored": (torch.bool, "topics"),
}
#: Per-episode arrays (one row per episode).
EPISODE_ARRAYS = {
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
def record_dataset(env: TopicRec, agent: Agent, episodes: int, seed: int, batch_size: int,
                   on_batch: Callable[[int, float], None] | None = None, staged: bool | None = None) -> dict[str, np.ndarray]:
    """Users 0 … episodes−1 of `seed`, `batch_size` at a time, the agent acting greedily; the dataset's arrays.

    The simulator and the agent must be on the same device. `staged` (default: off the CPU) records into
    device buffers copied to the host per batch; tests force it on a CPU to run that path.
    """
    cfg = env.config
    H, device = cfg.episode_length, env.device
    staged = device.type != "cpu" if staged is None else staged
    arrays: _Arrays | None = None
    done = 0
    for first in range(0, episodes, batch_size):
        B = min(batch_size, episodes - first)
        user_ids = torch.arange(first, first + B, device=device)
        reset = env.reset(user_ids, seed)
        agent.begin_episodes(reset, user_ids, seed)
        belief = agent.belief_state()
        if arrays is None:
            widths = _Widths(cfg.slate_size, belief.shape[1], agent.action_dim, cfg.embedding_dim, cfg.num_topics)
            arrays = _Arrays(episodes, H, widths, device, min(batch_size, episodes), staged)
        out = arrays.batch_targets(first, B)
        out["observations/slate"][:, 0] = reset.slate
        out["observations/clicks"][:, 0] = reset.clicks
        out["infos/user_state"][:, 0] = env.user
        for t in range(H):
            if belief.shape[1]:
                out["observations/belief"][:, t] = belief
            slate, action = agent.act(env, "greedy")
            result = env.step(slate, oracle=False)  # agents send item ids, never oracle positions
            agent.observe(result.observation)
            shown = result.observation
            out["actions/slate"][:, t] = shown.slate
            if agent.action_dim:
                out["actions/latent"][:, t] = action
            out["rewards"][:, t] = result.reward
            out["infos/bored"][:, t] = result.bored
            if t + 1 < H:
                out["observations/slate"][:, t + 1] = shown.slate
                out["observations/clicks"][:, t + 1] = shown.clicks
                out["infos/user_state"][:, t + 1] = result.user_state
                belief = agent.belief_state()
            else:
                out["final/clicks"][:] = shown.clicks
                out["final/user_state"][:] = result.user_state
        landed = arrays.submit(first, B)
        done = _report(arrays, landed, on_batch, done)
    assert arrays is not None  # episodes >= 1 (validated by the request)
    _report(arrays, arrays.drain(), on_batch, done)
    return arrays.host


def _report(arrays: _Arrays, landed: tuple[int, int] | None, on_batch, done: int) -> int:
    if landed is None:
        return done
    first, batch = landed
    if on_batch is not None:
        rewards = arrays.host["rewards"][first * arrays.horizon:(first + batch) * arrays.horizon]
        on_batch(first + batch, float(rewards.reshape(batch, -1).sum(axis=1).mean()))
    return first + batch
