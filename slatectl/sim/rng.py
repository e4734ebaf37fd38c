"""Counter-based random numbers: each draw is a pure function of (seed, stream, user index, counter).

This is what makes a user's trajectory independent of how many users are simulated beside it and of
the order in which batches run: no generator state is shared between users. The mixing function is
the 32-bit PCG hash ("Hash Functions for GPU Rendering", Jarzynski & Olano, JCGT 2020), computed in
int64 so every intermediate product stays below 2^63. A user's key is built by chaining the hash over
(seed, stream, user id); a draw is one more hash of key XOR hash(counter): one hash round per value,
because the random draws are the simulator's hottest loop.

Device: every tensor is made on the device of the user ids given (the keys live there). The hash uses
only int64 multiply, add, and, xor and shifts, which are exact on every torch backend, so the same
(seed, stream, user, counter) gives the same integers on a GPU as on the CPU; the integer → float
conversions (24-bit values to float32, exact) are identical too. Only `normal` goes through log/cos/sin,
whose float64 results may differ by an ulp between backends (then rounded to float32).
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF


def pcg_hash(x: torch.Tensor) -> torch.Tensor:
    """PCG-RXS-M-XS 32-bit hash of int64 tensors holding values in [0, 2^32)."""
    state = (x * 747796405 + 2891336453) & _MASK32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & _MASK32
    return ((word >> 22) ^ word) & _MASK32


def _hash_counters(counters: torch.Tensor) -> torch.Tensor:
    """The counter half of a draw: hash(hash(c) XOR golden ratio), a function of the counter alone."""
    return pcg_hash(pcg_hash(counters) ^ 0x9E3779B9)


#: Counters with their hashes kept per device: a whole episode's (100 steps × 64 counters) and more.
_COUNTER_TABLE_SIZE = 1 << 14
_counter_tables: dict[torch.device, torch.Tensor] = {}


def _counter_hashes(counter: int, n: int, device: torch.device) -> torch.Tensor:
    """`_hash_counters` of counters counter … counter+n−1. The same counters come back every episode, so
    the first 2^14 are hashed once per device and looked up: one hash round per drawn value instead of three
    (with one user, the simulator's step is a few hundred tiny ops, and the draws were a fifth of them)."""
    if 0 <= counter and counter + n <= _COUNTER_TABLE_SIZE:
        table = _counter_tables.get(device)
        if table is None:  # two threads may both build it: the same values
            table = _counter_tables[device] = _hash_counters(
                torch.arange(_COUNTER_TABLE_SIZE, dtype=torch.int64, device=device))
        return table[counter:counter + n]
    return _hash_counters(torch.arange(counter, counter + n, dtype=torch.int64, device=device) & _MASK32)


def _mix_scalar_into(keys: torch.Tensor, value: int) -> torch.Tensor:
    value &= (1 << 64) - 1
    keys = pcg_hash(keys ^ (value & _MASK32))
    return pcg_hash(keys ^ (value >> 32))


class CounterRNG:
    """Uniform and derived draws for a batch of users; `counter` indexes the draw within a user's stream."""

    def __init__(self, seed: int, stream: int, user_ids: torch.Tensor):
        ids = user_ids.to(torch.int64)
        # One host sync per reset (not per step): a negative id would alias another user's stream. Not while a
        # CUDA graph is being captured (training's captured episodes): reading the device there breaks the
        # capture, and those ids come from the run's own id range, checked when the run starts.
        capturing = ids.is_cuda and torch.cuda.is_current_stream_capturing()
        if not capturing and bool((ids < 0).any()):
            raise ValueError("user ids must be non-negative")
        base = torch.zeros_like(ids)
        base = _mix_scalar_into(base, seed)
        base = _mix_scalar_into(base, stream)
        base = pcg_hash(base ^ (ids & _MASK32))
        self.key = pcg_hash(base ^ (ids >> 32))

    @classmethod
    def concat(cls, rngs: "list[CounterRNG]") -> "CounterRNG":
        """One batch holding the users of several RNGs in order (each keeps its own seed's stream)."""
        joined = cls.__new__(cls)
        joined.key = torch.cat([r.key for r in rngs])
        return joined

    @property
    def device(self) -> torch.device:
        return self.key.device

    @property
    def batch_size(self) -> int:
        return self.key.shape[0]

    def bits(self, counter: int, n: int) -> torch.Tensor:
        """(B, n) int64 values uniform on [0, 2^32) for counters counter … counter+n-1."""
        return pcg_hash(self.key[:, None] ^ _counter_hashes(counter, n, self.key.device)[None, :])

    def uniform(self, counter: int, n: int) -> torch.Tensor:
        """(B, n) float32 uniform on the open interval (0, 1) (24-bit resolution)."""
        top24 = (self.bits(counter, n) >> 8).to(torch.float32)
        return (top24 + 0.5) * (1.0 / (1 << 24))

    def normal(self, counter: int, n: int) -> torch.Tensor:
        """(B, n) standard normals by Box-Muller; uses counters counter … counter+2·ceil(n/2)-1."""
        pairs = (n + 1) // 2
        u = self.uniform(counter, 2 * pairs).to(torch.float64)
        radius = torch.sqrt(-2.0 * torch.log(u[:, :pairs]))
        angle = 2.0 * math.pi * u[:, pairs:]
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
        return z[:, :n].to(torch.float32)

    def integers(self, counter: int, n: int, high: int | torch.Tensor) -> torch.Tensor:
        """(B, n) int64 uniform on [0, high) (high may vary per column)."""
        # An int `high` stays a Python scalar: `torch.as_tensor(int, device=...)` would be a synchronous
        # host-to-device copy at every reset, which a CUDA graph capture refuses. Same int64 products.
        if isinstance(high, torch.Tensor):
            high = high.to(device=self.key.device, dtype=torch.int64)
        return (self.bits(counter, n) * high) >> 32

    def distinct_items(self, counter: int, num_items: int, k: int) -> torch.Tensor:
        """(B, k) distinct items, a uniformly random ordered k-subset of range(num_items).

        Floyd's algorithm gives a uniform k-subset with k vectorised draws; a second set of k draws
        shuffles it, since Floyd's output order is not uniform. Uses counters counter … counter+2k-1.
        """
        draws = self.integers(counter, k, torch.arange(num_items - k + 1, num_items + 1, device=self.key.device))
        chosen = torch.empty_like(draws)
        for idx in range(k):
            candidate = draws[:, idx]
            taken = (chosen[:, :idx] == candidate[:, None]).any(dim=1)
            chosen[:, idx] = torch.where(taken, torch.full_like(candidate, num_items - k + idx), candidate)
        order = self.bits(counter + k, k).argsort(dim=1)
        return chosen.gather(1, order)
