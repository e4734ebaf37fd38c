"""EpisodeReplay: a ring of whole episodes, FIFO by capacity."""

from __future__ import annotations

import torch

from slatectl.agents.base import EpisodeBatch
from slatectl.train.replay import EpisodeReplay


def _numbered_episodes(first: int, n: int, horizon: int = 3) -> EpisodeBatch:
    """n episodes whose every field holds the episode's number (first … first+n−1): a slot's fields all
    name the same episode exactly when the replay wrote them from one episode."""
    number = torch.arange(first, first + n)
    full = lambda *shape, dtype=torch.float32: number.view(-1, *([1] * len(shape))).expand(n, *shape).to(dtype)  # noqa: E731
    slates = full(horizon + 1, 2, dtype=torch.int64)
    return EpisodeBatch(slates=slates, clicks=(full(horizon + 1, 2) % 2), actions=full(horizon, 4),
                        rec_slates=slates[:, 1:], rewards=full(horizon), user_states=full(horizon + 1, 5))


def _slot_numbers(replay: EpisodeReplay) -> list[int]:
    """The episode number in each filled slot, checking that every field of the slot agrees."""
    numbers = []
    for slot in range(replay.size):
        number = int(replay.storage["slates"][slot].flatten()[0])
        for field in ("slates", "actions", "rewards", "user_states"):
            assert (replay.storage[field][slot] == number).all(), (slot, field)
        assert (replay.storage["clicks"][slot] == number % 2).all(), (slot, "clicks")
        numbers.append(number)
    return numbers


def test_adding_more_episodes_than_the_capacity_keeps_the_newest_whole_episodes():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the indexed write with repeated slots raced on two threads
    try:
        replay = EpisodeReplay(capacity=3, batch_size=2)
        replay.add(_numbered_episodes(0, 2))  # slots 0, 1
        replay.add(_numbered_episodes(2, 20_000))  # episodes 2 … 20,001: only 19,999 … 20,001 survive
    finally:
        torch.set_num_threads(threads)
    # Ring positions as if added one by one: episode e sits in slot e mod 3.
    assert _slot_numbers(replay) == [20_001, 19_999, 20_000]
    assert replay.size == 3 and replay.next_slot == 20_002 % 3


def test_one_episode_at_a_time_evicts_the_oldest():
    replay = EpisodeReplay(capacity=4, batch_size=2)
    for e in range(6):
        replay.add(_numbered_episodes(e, 1))
    assert _slot_numbers(replay) == [4, 5, 2, 3] and replay.next_slot == 2
    batch = replay.sample(torch.Generator().manual_seed(0))
    assert batch.slates.shape == (2, 4, 2) and set(batch.slates[:, 0, 0].tolist()) <= {2, 3, 4, 5}
