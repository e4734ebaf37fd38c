"""A deliberately plain, one-user transcription of docs/simulator.md (deques, Python loops).

It consumes the same counter-based random draws as the batched simulator, so the two must produce
identical trajectories. It is slow and obvious on purpose: it is the test oracle for `TopicRec`.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from slatectl.sim.rng import CounterRNG
from slatectl.sim.topicrec import DRAWS_PER_STEP, USER_STREAM


class OneUserTopicRec:
    def __init__(self, config, item_embeddings: torch.Tensor):
        self.c = config
        self.E = item_embeddings.double().numpy()
        T, S = config.num_topics, config.topic_size
        self.chunk_norms = np.linalg.norm(self.E.reshape(-1, T, S), axis=2)
        self.topic = self.chunk_norms.argmax(axis=1)
        self.max_score = np.linalg.norm(self.E, axis=1).max()
        r = np.arange(config.slate_size)
        if config.click_model == "tdPBM":
            self.prop = 0.85**r
        else:
            self.prop = 0.5 * 0.85**r + 0.5 * 0.85 ** (config.slate_size - 1 - r)

    def _normalise(self, u):
        T = self.c.num_topics
        return u / np.linalg.norm(u.reshape(T, -1), axis=1).sum()

    def _masked(self):
        T = self.c.num_topics
        m = self.u.reshape(T, -1).copy()
        for topic in range(T):
            if self.bored[topic]:
                m[topic] = 0.0
        m[self.short_term] *= self.c.short_term_boost
        return m.reshape(-1)

    def _clicks(self, slate, masked, uniforms):
        c = self.c
        rel = []
        for item in slate:
            score = float(self.E[item] @ masked) / self.max_score
            rel.append(1.0 / (1.0 + np.exp(-c.slope * (score - c.offset))))
        topics = [self.topic[i] for i in slate]
        if max(topics.count(t) for t in set(topics)) >= c.diversity_threshold:
            rel = [x / c.diversity_penalty for x in rel]
        return [int(uniforms[r] < rel[r] * self.prop[r]) for r in range(c.slate_size)]

    def reset(self, user_id: int, seed: int):
        c = self.c
        T, S = c.num_topics, c.topic_size
        self.rng = CounterRNG(seed, USER_STREAM, torch.tensor([user_id]))
        u0 = np.abs(np.clip(0.4 * self.rng.normal(0, T * S)[0].double().numpy(), -1, 1)).reshape(T, S)
        p = self.rng.uniform(20, T)[0].double().numpy() ** 3
        p = p / p.sum()
        self.u = self._normalise((u0 * p[:, None]).reshape(-1))
        self.bored = [False] * T
        self.timeout = [c.bored_timeout] * T
        self.topic_log = deque(maxlen=c.recent_items_maxlen)
        self.time_log = deque(maxlen=c.recent_items_maxlen)
        self.t = 0
        self.short_term = 0
        slate = [int(np.argmax(self.chunk_norms[:, topic])) for topic in range(T)]
        no_boredom = self.u.copy()
        clicks = self._clicks(slate, no_boredom, self.rng.uniform(30, c.slate_size)[0].double().numpy())
        for r in range(c.slate_size):
            if clicks[r]:
                self.topic_log.append(self.topic[slate[r]])
        clicked = [r for r in range(c.slate_size) if clicks[r]]
        self.short_term = self.topic[slate[clicked[-1]]] if clicked else int(self.rng.integers(40, 1, T)[0, 0])
        return slate, clicks

    def step(self, slate, near_ties=None, tie_tolerance=0.0):
        """One step with the action `slate` (−1: the oracle's item of that rank). `near_ties` (the slate the
        batched simulator showed) is taken instead of the oracle's item of a rank where their scores
        differ by at most `tie_tolerance`: the batched simulator ranks float32 scores, this one float64
        scores, so two items whose scores differ by less than float32 rounding may come out either way."""
        c = self.c
        self.t += 1
        t = self.t
        for topic in range(c.num_topics):
            if self.bored[topic]:
                self.timeout[topic] -= 1
                if self.timeout[topic] == 0:
                    self.bored[topic] = False
            if not self.bored[topic]:
                self.timeout[topic] = c.bored_timeout
        for topic in range(c.num_topics):
            if list(self.topic_log).count(topic) >= c.boredom_threshold:
                self.bored[topic] = True
        masked = self._masked()
        if any(i < 0 for i in slate):
            scores = self.E @ masked
            order = np.argsort(-scores, kind="stable")[: c.slate_size]
            if near_ties is not None:
                order = [near_ties[r] if abs(scores[near_ties[r]] - scores[order[r]]) <= tie_tolerance else order[r]
                         for r in range(c.slate_size)]
            slate = [int(order[r]) if slate[r] < 0 else int(slate[r]) for r in range(c.slate_size)]
        clicks = self._clicks(slate, masked, self.rng.uniform(t * DRAWS_PER_STEP, c.slate_size)[0].double().numpy())
        for r in range(c.slate_size):
            if clicks[r]:
                self.topic_log.append(self.topic[slate[r]])
                self.time_log.append(t)
        while self.time_log and self.time_log[0] < t - c.boredom_moving_window:
            self.time_log.popleft()
            self.topic_log.popleft()
        for r in range(c.slate_size):
            if clicks[r]:
                self.u = self._normalise(c.omega * self.u + (1 - c.omega) * self.E[slate[r]])
        clicked = [r for r in range(c.slate_size) if clicks[r]]
        if self.bored[self.short_term] and clicked:
            self.short_term = self.topic[clicked[-1]]
        return slate, clicks, sum(clicks), t >= c.episode_length
