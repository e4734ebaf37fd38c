"""Replay of whole episodes (the reference's trajectory deque): FIFO with a capacity in episodes.

Stored as preallocated tensors (a ring) rather than a deque of objects so sampling a batch is one gather.
Item ids are kept as int16 and clicks as uint8; `rec_slates` is not stored because it equals
`slates[:, 1:]`. The resume state holds only the filled episodes, in the stored dtypes (sizes: BENCHMARKS.md,
"Disk use of a training run"), and loads back into the same ring positions so that sampling after
`--resume` is exact. The ring lives on the agent's device (a sampled batch needs no host transfer); the
sampled indices are drawn on the CPU generator whatever the device (the same draws on every device).
"""

from __future__ import annotations

import torch

from slatectl.agents.base import EpisodeBatch

_FIELDS = ("slates", "clicks", "actions", "rewards", "user_states")
_STORED_DTYPES = {"slates": torch.int16, "clicks": torch.uint8}
_SAMPLED_DTYPES = {"slates": torch.int64, "clicks": torch.float32}


class EpisodeReplay:
    def __init__(self, capacity: int, batch_size: int, device: torch.device | str = "cpu"):
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch size must be >= 1")
        self.capacity, self.batch_size, self.device = capacity, batch_size, torch.device(device)
        self.storage: dict[str, torch.Tensor] | None = None  # allocated by the first `add`
        self.size, self.next_slot = 0, 0

    def _allocate(self, like: dict[str, torch.Tensor]) -> None:
        self.storage = {f: torch.zeros((self.capacity, *like[f].shape[1:]), dtype=_STORED_DTYPES.get(f, like[f].dtype),
                                       device=self.device)
                        for f in _FIELDS}

    def add(self, episodes: EpisodeBatch) -> None:
        """Append E episodes, evicting the oldest beyond capacity.

        With E > capacity only the newest `capacity` episodes of the batch are written (the others would
        be evicted by later ones of the same batch): an indexed write with repeated slots has no defined
        winner (torch says so), and on two CPU threads it mixed fields of different episodes in one slot."""
        n = episodes.episodes
        if self.storage is None:
            self._allocate({f: getattr(episodes, f) for f in _FIELDS})
        kept = max(0, n - self.capacity)
        slots = (self.next_slot + torch.arange(kept, n, device=self.device)) % self.capacity
        for f in _FIELDS:
            self.storage[f][slots] = getattr(episodes, f)[kept:].detach().to(self.device, self.storage[f].dtype)
        self.next_slot = int((self.next_slot + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    @property
    def ready(self) -> bool:
        return self.size >= self.batch_size

    def sample(self, generator: torch.Generator | None = None) -> EpisodeBatch:
        """batch_size distinct episodes, uniformly without replacement (reference: random.sample)."""
        if not self.ready:
            raise RuntimeError("not enough episodes in the replay")
        index = torch.randperm(self.size, generator=generator)[: self.batch_size].to(self.device)
        fields = {f: self.storage[f][index].to(_SAMPLED_DTYPES.get(f, self.storage[f].dtype)) for f in _FIELDS}
        return EpisodeBatch(rec_slates=fields["slates"][:, 1:], **fields)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The filled slots only, copied: torch.save writes a view's whole underlying storage, so
        saving `storage[:size]` without a copy would write the full preallocated capacity."""
        state = {"size": torch.tensor(self.size), "next_slot": torch.tensor(self.next_slot)}
        if self.storage is not None and self.size:
            state.update({f"storage.{f}": t[: self.size].to("cpu", copy=True) for f, t in self.storage.items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.size, self.next_slot = int(state["size"]), int(state["next_slot"])
        self.storage = None
        if self.size:
            saved = {f: state[f"storage.{f}"] for f in _FIELDS}
            self._allocate(saved)
            for f in _FIELDS:
                self.storage[f][: self.size] = saved[f]
