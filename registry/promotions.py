"""Promotions: a person's choice of checkpoint for an (env, quality), kept as append-only history.

Promoting inserts a new active row and, in the same transaction, marks the previous active row for that
(env, quality) inactive and points it at its successor; nothing else about a promotion ever changes.
A checkpoint is promoted only after its file was checked against the recorded size and SHA-256.
"""

from __future__ import annotations

import getpass

from sqlmodel import select

from slatectl.domain import PROMOTABLE_QUALITIES, Quality
from slatectl.errors import BadInput
from slatectl.registry.database import Database
from slatectl.registry.db import serialize_on
from slatectl.registry.lookups import check_quality, get_checkpoint
from slatectl.registry.models import Checkpoint, Promotion


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry / no login name in some containers
        return "unknown"


class PromotionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def promote_checkpoint(self, env: str | None, quality: Quality | str, checkpoint_id: int, note: str | None = None,
                           promoted_by: str | None = None, allow_same: bool = False) -> Promotion:
        """Make `checkpoint_id` the active one for (env, quality); the previous one stays in history.

        `env` may be None (taken from the checkpoint); if given it must be the checkpoint's env. The
        checkpoint's file must match its recorded size and SHA-256 (MissingFile / CorruptFile otherwise,
        and nothing is written). A checkpoint already active for another quality of the env (medium and
        expert the same policy, so their datasets would be alike) is refused unless `allow_same`.
        """
        quality = check_quality(quality)
        with self.db.read() as session:
            checkpoint = get_checkpoint(session, checkpoint_id)
        self._check_env(checkpoint, env)
        self.db.store.check(checkpoint.storage_key, checkpoint.size, checkpoint.sha256,
                            what=f"file of checkpoint {checkpoint_id}")
        with self.db.write() as session:
            checkpoint = get_checkpoint(session, checkpoint_id)
            env = checkpoint.env
            serialize_on(session, f"promotion:{env}:{quality}")
            previous = active(session, env, quality)
            if not allow_same:
                _refuse_same_checkpoint(session, env, quality, checkpoint_id)
            if previous is not None:
                # Deactivate first: the partial unique index allows one active row per (env, quality).
                previous.active = False
                session.add(previous)
                session.flush()
            promotion = Promotion(env=env, quality=quality.value, checkpoint_id=checkpoint_id, note=note,
                                  promoted_by=promoted_by or current_user(), active=True)
            session.add(promotion)
            session.flush()
            if previous is not None:
                previous.superseded_by = promotion.id
                session.add(previous)
        return promotion

    @staticmethod
    def _check_env(checkpoint: Checkpoint, env: str | None) -> None:
        if env is not None and env != checkpoint.env:
            raise BadInput(f"checkpoint {checkpoint.id} was trained on {checkpoint.env}, not {env}; promote a "
                           f"checkpoint of {env} (`slatectl ckpt list --env {env}`).")

    def active_promotion(self, env: str, quality: Quality | str) -> Promotion | None:
        quality = check_quality(quality)
        with self.db.read() as session:
            return active(session, env, quality)

    def promoted_checkpoint(self, env: str, quality: Quality | str) -> tuple[Promotion, Checkpoint]:
        """The active promotion for (env, quality) and its checkpoint; BadInput when there is none."""
        quality = check_quality(quality)
        with self.db.read() as session:
            promotion = active(session, env, quality)
            if promotion is None:
                raise BadInput(f"no checkpoint is promoted as {quality} for {env}; choose one with "
                               f"`slatectl ckpt promote --quality {quality} --env {env}`.")
            return promotion, get_checkpoint(session, promotion.checkpoint_id)

    def promotion_history(self, env: str | None = None, quality: str | None = None) -> list[Promotion]:
        """Every promotion, oldest first."""
        query = select(Promotion).order_by(Promotion.id)
        if env:
            query = query.where(Promotion.env == env)
        if quality:
            check_quality(quality, allow_random=True)
            query = query.where(Promotion.quality == quality)
        with self.db.read() as session:
            return list(session.exec(query))

    def active_promotions(self) -> list[Promotion]:
        with self.db.read() as session:
            return list(session.exec(select(Promotion).where(Promotion.active).order_by(Promotion.env, Promotion.quality)))


def active(session, env: str, quality: str) -> Promotion | None:
    return session.exec(select(Promotion).where(Promotion.env == env, Promotion.quality == quality,
                                                Promotion.active)).first()


def _refuse_same_checkpoint(session, env: str, quality: str, checkpoint_id: int) -> None:
    for other in PROMOTABLE_QUALITIES:
        if other == quality:
            continue
        current = active(session, env, other)
        if current is not None and current.checkpoint_id == checkpoint_id:
            raise BadInput(f"checkpoint {checkpoint_id} is already promoted as {other} for {env}: {other} and "
                           f"{quality} would be the same policy and their datasets alike. Promote another "
                           f"checkpoint, or pass --allow-same to promote it as both.")
