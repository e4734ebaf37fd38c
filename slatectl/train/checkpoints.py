"""Checkpoints and resume states of a run. At each save step, in this order: (1) the resume state
(`ResumeState`: the agent's weights and buffers, optimizer states, the filled replay, the torch RNG, the
validation) is registered as a `resume-state` artifact, written atomically by the store; (2) the checkpoint
(agent weights) with its validation return; (3) the run's resume states beyond the newest `keep` are pruned.
A kill between 1 and 2 leaves a resume state whose checkpoint `--resume` registers; a kill before 3 leaves
one resume state too many, pruned by the next save (or `registry gc`). Never a checkpoint that cannot be
resumed from, never a pruned state that is the newest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from slatectl.registry import RESUME_STATE_KIND, Artifact, Checkpoint, Registry
from slatectl.train.evaluation import Evaluation


@dataclass
class ResumeState:
    step: int
    agent: dict[str, torch.Tensor]
    optimizers: dict[str, dict]
    replay: dict[str, torch.Tensor]
    torch_rng: torch.Tensor
    val: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "val": {**vars(self.val)}}  # shallow copies: the tensors are saved as they are


def register_resume_state(registry: Registry, run_id: int, env_name: str, state: ResumeState) -> None:
    registry.register_artifact(RESUME_STATE_KIND, env_name, state.to_dict(), run_id=run_id,
                               config={"run_id": run_id, "step": state.step})


def register_checkpoint(registry: Registry, run_id: int, step: int, agent_state: dict[str, Any], val: Evaluation,
                        episode_length: int | None, trained: bool | None = None) -> Checkpoint:
    """The one path by which weights become a registered checkpoint (the trainer and
    `slatectl.lightning.RegistryCheckpoint`): the store writes the file (temp + fsync + rename, SHA-256),
    then the row. `trained`: True for agents that update from the first episode; None lets the registry
    apply the random-phase rule (step > training.random_steps) from the run's config. `episode_length`:
    None when a step is not an episode (a Lightning optimizer step), leaving episodes/env_steps empty.
    Idempotent per (run, step): a run that saves a step again gets the registered checkpoint back."""
    weights = {k: (v.detach().to("cpu") if isinstance(v, torch.Tensor) else v) for k, v in agent_state.items()}
    return registry.register_checkpoint(
        run_id, step, weights, val_return_mean=val.mean, val_return_std=val.std, val_episodes=val.episodes,
        episodes=None if episode_length is None else step,
        env_steps=None if episode_length is None else step * episode_length, trained=trained, existing_ok=True)


def resume_states_by_step(registry: Registry, run_id: int, env_name: str) -> dict[int, Artifact]:
    """The run's resume states still on disk by step (the newest artifact of a step if one was redone)."""
    states = [a for a in registry.list_artifacts(kind=RESUME_STATE_KIND, env=env_name) if a.run_id == run_id]
    return {int(a.config["step"]): a for a in sorted(states, key=lambda a: (a.config["step"], a.id))}


def load_resume_state(registry: Registry, artifact: Artifact) -> ResumeState:
    """A registered resume state (hash-checked on load)."""
    data = registry.load_artifact_state(artifact.id)
    return ResumeState(**{**data, "val": Evaluation(**data["val"])})
