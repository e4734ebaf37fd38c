"""TopicRec, batched: B independent simulated users stepped together with tensor operations.

Implements the equations of docs/simulator.md exactly, including the reference quirks kept there (reset
clicks enter the topic log without timestamps; the short-term topic is updated from a rank index). Every random draw comes
from a `CounterRNG` keyed by (seed, user id), so a user's trajectory depends only on the seed and its id.

Device: the simulator lives on the device of its item table (`make_env(..., device=)` puts it there) and
creates every tensor there, so one code path serves CPU and GPU. Inside `step` nothing waits for the
device (no `.item()`, `bool(tensor)` or host copies) except where the choice is free on a CPU: the
"any oracle position?" test when the caller does not say (`step(slate, oracle=...)`), and the
drift update of only the clicking users (`nonzero`), which the CPU runs because it touches a few percent of
the rows; other devices update every row with a mask instead. Both give the same numbers
(tests/test_device.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slatectl.sim.click_model import click_probabilities, examination_propensities, relevance
from slatectl.sim.config import EnvConfig
from slatectl.sim.embeddings import item_topics
from slatectl.sim.rng import CounterRNG

# Stream ids of the simulator's own draws (policies use other streams).
USER_STREAM = 0
# Counter layout within the user stream: a block of DRAWS_PER_STEP counters per step t (reset is t = 0).
DRAWS_PER_STEP = 64
# Users per block of the oracle's B×N score matrix: small on a CPU (cache), large on a GPU (launches).
_ORACLE_BLOCK = {"cpu": 512}
_ORACLE_BLOCK_OTHER = 65536
_RESET_NORMALS, _RESET_WEIGHTS, _RESET_CLICKS, _RESET_SHORT_TERM = 0, 20, 30, 40


@dataclass
class Observation:
    slate: torch.Tensor  # (B, K) int64: the slate shown (oracle positions already filled)
    clicks: torch.Tensor  # (B, K) int64 in {0, 1}


@dataclass
class StepResult:
    observation: Observation
    reward: torch.Tensor  # (B,) float32: number of clicks
    done: bool  # all users of a batch share t, so done is common
    user_state: torch.Tensor  # (B, D) hidden: user embedding after drift
    bored: torch.Tensor  # (B, T) hidden: topics bored during this step


def normalise_user(u: torch.Tensor, num_topics: int) -> torch.Tensor:
    """Divide by the sum over topics of the per-topic chunk L2 norms (the spec's normalisation)."""
    chunks = u.view(u.shape[0], num_topics, -1)
    return u / (chunks * chunks).sum(dim=-1).sqrt().sum(dim=-1, keepdim=True)


class TopicRec:
    """B users in lockstep: `reset(user_ids, seed)` then `step(slates)` H times."""

    def __init__(self, config: EnvConfig, item_embeddings: torch.Tensor):
        """The simulator runs on `item_embeddings.device`."""
        n, d = item_embeddings.shape
        if (n, d) != (config.num_items, config.embedding_dim):
            raise ValueError(f"item table is {n}×{d}; config wants {config.num_items}×{config.embedding_dim}")
        self.config = config
        self.item_embeddings = item_embeddings.float().contiguous()
        self.device = self.item_embeddings.device
        # CPU: drift only the clicking users (a host-side `nonzero`, free there); elsewhere a masked
        # update of every user avoids the sync. Same numbers either way.
        self.sparse_drift = self.device.type == "cpu"
        self.item_topics = item_topics(self.item_embeddings, config.num_topics)
        self.max_score = float(self.item_embeddings.norm(dim=1).max())
        self.propensities = examination_propensities(config.click_model, config.slate_size, device=self.device)
        chunk_norms = self.item_embeddings.view(n, config.num_topics, config.topic_size).norm(dim=-1)
        # Reset slate: per topic (in topic order) the item with the largest chunk norm in that topic.
        self.initial_slate = chunk_norms.argmax(dim=0)[: config.slate_size]
        self._rank_numbers = torch.arange(1, config.slate_size + 1, device=self.device)  # 1 … K
        self._log_positions = torch.arange(config.recent_items_maxlen, device=self.device)  # 0 … L−1
        # Added to item ids that index this env's own item arrays (0 here; per user in MixedTopicRec).
        self.item_id_offset: int | torch.Tensor = 0
        self.t = 0
        self._batch = 0

    def to(self, device: torch.device | str) -> "TopicRec":
        """This simulator on `device`: itself when its item table is already there, else a new one."""
        table = self.item_embeddings.to(device)
        return self if table is self.item_embeddings else type(self)(self.config, table)

    # ----------------------------------------------------------------- helpers
    @property
    def batch_size(self) -> int:
        return self._batch

    def masked_user(self) -> torch.Tensor:
        """ũ: bored topics' chunks zeroed, short-term topic's chunk × boost (not re-normalised)."""
        cfg = self.config
        chunk_scale = (~self.bored).float()
        if cfg.short_term_boost != 1.0:
            boost = torch.ones_like(chunk_scale)
            boost.scatter_(1, self.short_term[:, None], cfg.short_term_boost)
            chunk_scale = chunk_scale * boost
        return (self.user.view(-1, cfg.num_topics, cfg.topic_size) * chunk_scale[..., None]).view(self.user.shape)

    def item_scores(self, masked_user: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) ⟨e_i, ũ⟩ / max_score for every item."""
        u = self.masked_user() if masked_user is None else masked_user
        return (u @ self.item_embeddings.T) / self.max_score

    def relevances(self) -> torch.Tensor:
        """(B, N) current true relevance of every item (privileged: used by SlateQ and analysis)."""
        return relevance(self.item_scores(), self.config.offset, self.config.slope)

    def oracle_slate(self, masked_user: torch.Tensor | None = None) -> torch.Tensor:
        """Top-K items by current ⟨e_i, ũ⟩, sorted descending.

        Computed in blocks of users so each block's B×N score matrix stays in cache (the full matrix
        at B = 16k is 64 MB, and writing then re-reading it costs more than the arithmetic); the
        division by max_score is skipped because it does not change the ranking.
        """
        u = self.masked_user() if masked_user is None else masked_user
        table_t = self.item_embeddings.T.contiguous()
        k = self.config.slate_size
        size = _ORACLE_BLOCK.get(u.device.type, _ORACLE_BLOCK_OTHER)
        blocks = [(u[i : i + size] @ table_t).topk(k, dim=1).indices for i in range(0, u.shape[0], size)]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    def _slate_scores(self, slate: torch.Tensor, masked_user: torch.Tensor) -> torch.Tensor:
        """(B, K) ⟨e_i, ũ⟩ / max_score of the slate's items. bmm, not einsum: the same kernel and values,
        without einsum's ~15 µs of planning per call (a tenth of a one-user step)."""
        slate_vectors = torch.nn.functional.embedding(slate, self.item_embeddings)
        return torch.bmm(slate_vectors, masked_user[:, :, None]).squeeze(-1) / self.max_score

    def _click(self, slate: torch.Tensor, masked_user: torch.Tensor, counter: int) -> torch.Tensor:
        cfg = self.config
        probs = click_probabilities(
            relevance(self._slate_scores(slate, masked_user), cfg.offset, cfg.slope), self.item_topics[slate], self.propensities,
            cfg.num_topics, cfg.diversity_threshold, cfg.diversity_penalty,
        )
        return (self.rng.uniform(counter, cfg.slate_size) < probs).to(torch.int64)

    def _append_clicked_topics(self, clicks: torch.Tensor, topics: torch.Tensor, stamp: int | None) -> None:
        """Append clicked topics (rank order) to the topic log, and `stamp` per click to the timestamp log.

        Logs are right-aligned (B, L) arrays with a per-user length; appending c entries shifts left by c.
        """
        L = self.config.recent_items_maxlen
        n_clicks = clicks.sum(dim=1)
        # Clicked topics compacted to the front in rank order; unclicked ranks go to a spare column.
        K = clicks.shape[1]
        destination = torch.where(clicks.bool(), clicks.cumsum(dim=1) - 1, K)
        new_topics = torch.zeros(clicks.shape[0], K + 1, dtype=topics.dtype, device=self.device).scatter_(1, destination, topics)[:, :K]
        idx = n_clicks[:, None] + torch.arange(L, device=self.device)[None, :]
        self.topic_log = torch.cat([self.topic_log, new_topics], dim=1).gather(1, idx)
        self.topic_len = torch.clamp(self.topic_len + n_clicks, max=L)
        if stamp is not None:
            stamps = torch.full_like(new_topics, stamp)
            self.time_log = torch.cat([self.time_log, stamps], dim=1).gather(1, idx)
            self.time_len = torch.clamp(self.time_len + n_clicks, max=L)

    # ----------------------------------------------------------------- API
    def reset(self, user_ids: torch.Tensor, seed: int) -> Observation:
        user_ids = torch.as_tensor(user_ids, dtype=torch.int64, device=self.device).reshape(-1)
        return self.reset_streams(CounterRNG(seed, USER_STREAM, user_ids))

    def reset_streams(self, rng: CounterRNG) -> Observation:
        """Reset with the users' random streams given directly, one row per user: users of different
        seeds can share a batch (population training: `CounterRNG.concat` of per-seed streams)."""
        cfg = self.config
        if rng.device != self.device:
            raise ValueError(f"the users' random streams are on {rng.device}, the simulator on {self.device}")
        B, T, S = rng.batch_size, cfg.num_topics, cfg.topic_size
        self._batch = B
        self.rng = rng
        u0 = torch.clamp(0.4 * self.rng.normal(_RESET_NORMALS, T * S), -1.0, 1.0).abs().view(B, T, S)
        weights = self.rng.uniform(_RESET_WEIGHTS, T) ** 3
        weights = weights / weights.sum(dim=1, keepdim=True)
        self.user = normalise_user((u0 * weights[..., None]).view(B, T * S), T)

        on = {"device": self.device}
        self.bored = torch.zeros(B, T, dtype=torch.bool, **on)
        self.bored_timeout = torch.full((B, T), cfg.bored_timeout, dtype=torch.int64, **on)
        L = cfg.recent_items_maxlen
        self.topic_log = torch.zeros(B, L, dtype=torch.int64, **on)
        self.time_log = torch.zeros(B, L, dtype=torch.int64, **on)
        self.topic_len = torch.zeros(B, dtype=torch.int64, **on)
        self.time_len = torch.zeros(B, dtype=torch.int64, **on)
        self.t = 0

        slate = self.initial_slate.expand(B, -1).clone()
        clicks = self._click(slate, self.user, _RESET_CLICKS)
        topics = self.item_topics[slate]
        # Quirk kept for fidelity: reset clicks enter the topic log but not the timestamp log.
        self._append_clicked_topics(clicks, topics, stamp=None)
        any_click = clicks.any(dim=1)
        last_rank = (clicks * self._rank_numbers).argmax(dim=1)
        random_topic = self.rng.integers(_RESET_SHORT_TERM, 1, T)[:, 0]
        self.short_term = torch.where(any_click, topics.gather(1, last_rank[:, None])[:, 0], random_topic)
        return Observation(slate=slate, clicks=clicks)

    def _update_boredom(self) -> None:
        cfg = self.config
        timeout = torch.where(self.bored, self.bored_timeout - 1, self.bored_timeout)
        self.bored = self.bored & (timeout > 0)
        self.bored_timeout = torch.where(self.bored, timeout, torch.full_like(timeout, cfg.bored_timeout))
        L = cfg.recent_items_maxlen
        valid = self._log_positions[None, :] >= (L - self.topic_len)[:, None]
        counts = torch.zeros(self._batch, cfg.num_topics, dtype=torch.int64, device=self.device)
        counts.scatter_add_(1, self.topic_log, valid.to(torch.int64))
        self.bored = self.bored | (counts >= cfg.boredom_threshold)

    def _drift(self, slate: torch.Tensor, clicks: torch.Tensor) -> None:
        """Drift towards each clicked item, in rank order, renormalising after each."""
        omega, topics = self.config.omega, self.config.num_topics
        if self.sparse_drift:
            # Only the ranks somebody clicked (one host read, free on a CPU), and at each only the users who
            # clicked there (a few percent): cheap at large B, and few ops at small B.
            for rank in torch.nonzero(clicks.any(dim=0)).flatten().tolist():
                users = torch.nonzero(clicks[:, rank]).flatten()
                drifted = omega * self.user[users] + (1.0 - omega) * self.item_embeddings[slate[users, rank]]
                self.user[users] = normalise_user(drifted, topics)
            return
        for rank in range(self.config.slate_size):
            drifted = omega * self.user + (1.0 - omega) * self.item_embeddings[slate[:, rank]]
            self.user = torch.where(clicks[:, rank, None].bool(), normalise_user(drifted, topics), self.user)

    def step(self, slate: torch.Tensor, oracle: bool | None = None) -> StepResult:
        """One step for every user. Negative slate entries ask for the oracle's item at that position;
        `oracle` says whether the slate may hold any (None: look, which waits for the device off a CPU)."""
        cfg = self.config
        if self.t >= cfg.episode_length:
            raise RuntimeError("episode is over; call reset()")
        slate = torch.as_tensor(slate, dtype=torch.int64, device=self.device)
        if slate.shape != (self._batch, cfg.slate_size):
            raise ValueError(f"slate must have shape ({self._batch}, {cfg.slate_size}), got {tuple(slate.shape)}")
        self.t += 1
        t = self.t
        self._update_boredom()
        masked = self.masked_user()
        if oracle is None:
            oracle = self.device.type != "cpu" or bool((slate < 0).any())
        if oracle:
            slate = torch.where(slate < 0, self.oracle_slate(masked), slate)
        clicks = self._click(slate, masked, t * DRAWS_PER_STEP)
        topics = self.item_topics[slate]

        self._append_clicked_topics(clicks, topics, stamp=t)
        expired = ((self.time_log < t - cfg.boredom_moving_window)
                   & (self._log_positions[None, :] >= (cfg.recent_items_maxlen - self.time_len)[:, None])).sum(dim=1)
        self.time_len = self.time_len - expired
        self.topic_len = self.topic_len - expired

        self._drift(slate, clicks)

        # Quirk kept for fidelity: the new short-term topic is topic(rank index of the last click).
        n_clicks = clicks.sum(dim=1)
        last_rank = (clicks * self._rank_numbers).argmax(dim=1)
        short_term_bored = self.bored.gather(1, self.short_term[:, None])[:, 0]
        self.short_term = torch.where(short_term_bored & (n_clicks > 0), self.item_topics[last_rank + self.item_id_offset], self.short_term)

        return StepResult(
            observation=Observation(slate=slate, clicks=clicks),
            reward=n_clicks.to(torch.float32),
            done=t >= cfg.episode_length,
            user_state=self.user.clone(),
            bored=self.bored.clone(),
        )
