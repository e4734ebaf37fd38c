"""Training episodes replayed from a CUDA graph: solo training's acting loop on a GPU without launch overhead.

Why: a solo run plays one user per step (the reference's semantics), and one env step of SAC+GeMS is
about 280 tiny tensor operations (policy, GeMS decoding, simulator, belief update). On a GPU each is a
kernel launched from Python, ~5 µs apiece, so an eager episode costs ~150 ms whatever the card — slower
than a CPU. Recorded once as a CUDA graph, the 100 steps of an episode replay as one launch, and the GPU
runs the kernels back to back.

Why it is valid: a replay re-runs exactly the recorded kernels on the recorded buffers. Everything an
episode reads is either produced inside it (the users' state after `env.reset`, the agent's online
belief after `begin_episodes`) or lives in tensors updated *in place* between replays (the agent's
parameters and buffers: optimizers, Polyak averaging, SlateQ's step counter all write in place), or is
the user-id buffer this class fills before each replay. Random draws come from the counter-based
simulator RNG (a function of the user ids) and from the CUDA generator, whose graph-safe state gives
each replay fresh numbers. The episode's output tensors are the graph's: valid until the next replay, so
the caller copies them (the replay does) before playing again.

Semantics equal `play_episodes`: the first call plays eagerly (a warm-up that capture needs, and a real
episode), the second records and then replays, later calls replay. If this torch/GPU cannot record the
episode (an operation that waits for the host, say), the episode is played eagerly from then on, with a
warning. CUDA only; the training loop uses it for learning-phase batches (`TRAIN_CUDA_GRAPH_ENV`).
Capture therefore needs the simulator's `reset` and `step`, and the agent's acting, to read nothing back
to the host on CUDA (`tests/test_gpu_paths.py` counts the reads of the agents and the loop on the CPU).
"""

from __future__ import annotations

from typing import Callable

import torch

from slatectl.agents.base import ActMode, Agent, EpisodeBatch
from slatectl.harness import capture_cuda_graph
from slatectl.sim.topicrec import TopicRec
from slatectl.train.episodes import play_episodes

#: Set to "0" to play CUDA training episodes eagerly instead of replaying a captured CUDA graph.
TRAIN_CUDA_GRAPH_ENV = "SLATECTL_TRAIN_CUDA_GRAPH"

Play = Callable[[torch.Tensor], EpisodeBatch]


class CapturedEpisodes:
    """`play_episodes(env, agent, user_ids, seed, mode, device)` for a fixed batch size, seed and mode."""

    def __init__(self, env: TopicRec, agent: Agent, seed: int, mode: ActMode, device: torch.device,
                 play: Play | None = None) -> None:
        self.device = device
        self.play: Play = play or (lambda user_ids: play_episodes(env, agent, user_ids, seed, mode, device))
        self.user_ids: torch.Tensor | None = None  # the graph's input buffer
        self.output: EpisodeBatch | None = None  # the graph's output buffers
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed = False
        self.failed: str | None = None

    @property
    def replaying(self) -> bool:
        return self.graph is not None

    def __call__(self, user_ids: torch.Tensor) -> EpisodeBatch:
        """Play users `user_ids` (on the device); the result is valid until the next call."""
        if self.failed is not None:
            return self.play(user_ids)
        if not self.warmed:
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                episodes = self.play(user_ids)
            torch.cuda.current_stream().wait_stream(side)
            self.warmed = True
            return episodes
        if self.graph is None:
            self.user_ids = user_ids.clone()
            if not self._capture():
                return self.play(user_ids)
        elif self.user_ids is not None and user_ids.shape == self.user_ids.shape:
            self.user_ids.copy_(user_ids)
        else:
            raise ValueError(f"a captured episode batch plays {tuple(self.user_ids.shape)} users, got {tuple(user_ids.shape)}")
        self.graph.replay()
        assert self.output is not None
        return self.output

    def _capture(self) -> bool:
        def record() -> None:
            self.output = self.play(self.user_ids)  # recorded, not run: the first replay runs it

        self.graph, self.failed = capture_cuda_graph(record, "training episodes")
        return self.graph is not None
