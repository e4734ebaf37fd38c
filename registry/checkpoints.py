"""Agent checkpoints: stored file first, then its row, so a row always has a complete, hashed file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sqlmodel import select

from slatectl.errors import BadInput
from slatectl.registry.database import Database
from slatectl.registry.db import serialize_on
from slatectl.registry.lookups import check_finite, check_quality, get_checkpoint, get_run
from slatectl.registry.models import Checkpoint, Promotion
from slatectl.registry.training_state import trained_at_step
from slatectl.storage import StoredFile

CHECKPOINT_KIND = "checkpoint"


class CheckpointRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register_checkpoint(self, run_id: int, step: int, state_dict: Mapping[str, Any], *,
                            val_return_mean: float, val_return_std: float, val_episodes: int,
                            episodes: int | None = None, env_steps: int | None = None,
                            trained: bool | None = None, existing_ok: bool = False) -> Checkpoint:
        """Store `state_dict` and record it for (run, step) with its validation return.

        One checkpoint per (run, step), enforced by a unique constraint: a second registration is
        BadInput, or with `existing_ok` (a retried task re-saving a step) returns the registered row and
        stores nothing, so a retry never makes a duplicate or an orphan file.

        `trained`: whether the agent had been updated when it was saved; None applies the training
        loop's random-phase rule to the run's config (`training_state.trained_at_step`). Updates the run's
        `best` (highest validation return, earliest step on ties) and `last` (highest step) flags in the
        same transaction as the insert.
        """
        val_return_mean = check_finite("val_return_mean", val_return_mean)
        val_return_std = check_finite("val_return_std", val_return_std)
        if int(step) < 0 or int(val_episodes) < 1:
            raise BadInput(f"a checkpoint needs step >= 0 and val_episodes >= 1 (got {step}, {val_episodes}).")
        with self.db.read() as session:
            get_run(session, run_id)
            existing = registered_at(session, run_id, step)
        if existing is not None:
            if existing_ok:
                return self.get_checkpoint(existing)
            refuse_duplicate_step(existing, run_id, step)
        stored = self.db.store.put_state_dict(CHECKPOINT_KIND, state_dict)
        values = dict(step=int(step), episodes=episodes, env_steps=env_steps, val_return_mean=val_return_mean,
                      val_return_std=val_return_std, val_episodes=int(val_episodes), trained=trained)
        try:
            return self.db.insert_with_file(stored, lambda session: self.insert_row(session, run_id, stored, values))
        except _AlreadyRegistered as raced:  # registered meanwhile by another process; our file was removed
            if existing_ok:
                return self.get_checkpoint(raced.checkpoint_id)
            refuse_duplicate_step(raced.checkpoint_id, run_id, step)
            raise

    def insert_row(self, session, run_id: int, stored: StoredFile, values: dict) -> Checkpoint:
        """The checkpoint's row and the run's best/last flags, inside the caller's write transaction."""
        serialize_on(session, f"run:{run_id}")
        run = get_run(session, run_id)
        existing = registered_at(session, run_id, values["step"])
        if existing is not None:
            raise _AlreadyRegistered(existing)
        if values.get("trained") is None:
            values = {**values, "trained": trained_at_step(values["step"], run.config)}
        checkpoint = Checkpoint(run_id=run_id, env=run.env, agent=run.agent, storage_key=stored.key,
                                size=stored.size, sha256=stored.sha256, **values)
        best = session.exec(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.is_best)).first()
        if best is None or (checkpoint.val_return_mean, -checkpoint.step) > (best.val_return_mean, -best.step):
            if best is not None:
                best.is_best = False
                session.add(best)
            checkpoint.is_best = True
        last = session.exec(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.is_last)).first()
        if last is None or checkpoint.step > last.step:
            if last is not None:
                last.is_last = False
                session.add(last)
            checkpoint.is_last = True
        session.add(checkpoint)
        session.flush()
        return checkpoint

    def record_test_return(self, checkpoint_id: int, mean: float, std: float, episodes: int) -> Checkpoint:
        """Fill in the test return measured after training (the only later change to a checkpoint)."""
        mean, std = check_finite("test return mean", mean), check_finite("test return std", std)
        with self.db.write() as session:
            checkpoint = get_checkpoint(session, checkpoint_id)
            checkpoint.test_return_mean, checkpoint.test_return_std = mean, std
            checkpoint.test_episodes = int(episodes)
            session.add(checkpoint)
        return checkpoint

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint:
        with self.db.read() as session:
            return get_checkpoint(session, checkpoint_id)

    def list_checkpoints(self, env: str | None = None, agent: str | None = None, run_id: int | None = None,
                         quality: str | None = None) -> list[Checkpoint]:
        """Checkpoints in (env, run, step) order; `quality` keeps those currently promoted for it."""
        query = select(Checkpoint).order_by(Checkpoint.env, Checkpoint.run_id, Checkpoint.step)
        if env:
            query = query.where(Checkpoint.env == env)
        if agent:
            query = query.where(Checkpoint.agent == agent)
        if run_id is not None:
            query = query.where(Checkpoint.run_id == run_id)
        if quality:
            check_quality(quality, allow_random=True)
            query = query.join(Promotion, Promotion.checkpoint_id == Checkpoint.id).where(
                Promotion.quality == quality, Promotion.active)
        with self.db.read() as session:
            return list(session.exec(query))

    def checkpoint_envs(self) -> list[str]:
        with self.db.read() as session:
            return sorted(set(session.exec(select(Checkpoint.env).distinct())))

    def load_checkpoint_state(self, checkpoint_id: int, map_location: str = "cpu") -> dict[str, Any]:
        """The state dict, after checking the file's size and SHA-256 against the registry."""
        checkpoint = self.get_checkpoint(checkpoint_id)
        return self.db.store.load_state_dict(checkpoint.storage_key, checkpoint.size, checkpoint.sha256,
                                             what=f"file of checkpoint {checkpoint_id}", map_location=map_location)

    def checkpoint_path(self, checkpoint_id: int) -> Path:
        """The checkpoint's file, verified; for tools that need a path rather than a state dict."""
        checkpoint = self.get_checkpoint(checkpoint_id)
        return self.db.store.check(checkpoint.storage_key, checkpoint.size, checkpoint.sha256,
                                   what=f"file of checkpoint {checkpoint_id}")


class _AlreadyRegistered(Exception):
    def __init__(self, checkpoint_id: int) -> None:
        super().__init__(checkpoint_id)
        self.checkpoint_id = checkpoint_id


def registered_at(session, run_id: int, step: int) -> int | None:
    """The id of the run's checkpoint at `step`, if there is one."""
    return session.exec(select(Checkpoint.id).where(Checkpoint.run_id == run_id, Checkpoint.step == step)).first()


def refuse_duplicate_step(existing: int, run_id: int, step: int) -> None:
    raise BadInput(f"run {run_id} already has checkpoint {existing} at step {step}; steps are saved once.")
