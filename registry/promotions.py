"""Promotions: a person's choice of checkpoint for an (env, quality), kept as append-only history.

Promoting inserts a new active row and, in the same transaction, marks the previous active row for that
(env, quality) inactive and points it at its successor; nothing else about a promotion ever changes.
"""

from __future__ import annotations

import getpass

from sqlmodel import select

from slatectl.registry.checkpoints import _get_checkpoint
from slatectl.registry.db import serialize_on
from slatectl.registry.models import PROMOTABLE_QUALITIES, QUALITIES, Checkpoint, Promotion
from slatectl.errors import BadInput


def check_quality(quality: str, allow_random: bool = False) -> str:
    allowed = QUALITIES if allow_random else PROMOTABLE_QUALITIES
    if quality == "random" and not allow_random:
        raise BadInput("quality 'random' is produced by the uniform random slate policy and needs no checkpoint, "
                       "so there is nothing to promote; `slatectl collect --quality random` works as it is.")
    if quality not in allowed:
        raise BadInput(f"unknown quality {quality!r}; choose one of {', '.join(allowed)}.")
    return quality


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry / no login name in some containers
        return "unknown"


class PromotionOps:
    def promote_checkpoint(self, env: str | None, quality: str, checkpoint_id: int, note: str | None = None,
                           promoted_by: str | None = None) -> Promotion:
        """Make `checkpoint_id` the active one for (env, quality); the previous one stays in history.

        `env` may be None (taken from the checkpoint); if given it must be the checkpoint's env.
        """
        check_quality(quality)
        with self.write() as session:
            checkpoint = _get_checkpoint(session, checkpoint_id)
            if env is not None and env != checkpoint.env:
                raise BadInput(f"checkpoint {checkpoint_id} was trained on {checkpoint.env}, not {env}; promote a "
                               f"checkpoint of {env} (`slatectl ckpt list --env {env}`).")
            env = checkpoint.env
            serialize_on(session, f"promotion:{env}:{quality}")
            previous = _active(session, env, quality)
            if previous is not None:
                # Deactivate first: the partial unique index allows one active row per (env, quality).
                previous.active = False
                session.add(previous)
                session.flush()
            promotion = Promotion(env=env, quality=quality, checkpoint_id=checkpoint_id, note=note,
                                  promoted_by=promoted_by or current_user(), active=True)
            session.add(promotion)
            session.flush()
            if previous is not None:
                previous.superseded_by = promotion.id
                session.add(previous)
        return promotion

    def active_promotion(self, env: str, quality: str) -> Promotion | None:
        check_quality(quality)
        with self.read() as session:
            return _active(session, env, quality)

    def promoted_checkpoint(self, env: str, quality: str) -> tuple[Promotion, Checkpoint]:
        """The active promotion for (env, quality) and its checkpoint; BadInput when there is none."""
        check_quality(quality)
        with self.read() as session:
            promotion = _active(session, env, quality)
            if promotion is None:
                raise BadInput(f"no checkpoint is promoted as {quality} for {env}; choose one with "
                               f"`slatectl ckpt promote --quality {quality} --env {env}`.")
            return promotion, _get_checkpoint(session, promotion.checkpoint_id)

    def promotion_history(self, env: str | None = None, quality: str | None = None) -> list[Promotion]:
        """Every promotion, oldest first."""
        query = select(Promotion).order_by(Promotion.id)
        if env:
            query = query.where(Promotion.env == env)
        if quality:
            check_quality(quality, allow_random=True)
            query = query.where(Promotion.quality == quality)
        with self.read() as session:
            return list(session.exec(query))

    def active_promotions(self) -> list[Promotion]:
        with self.read() as session:
            return list(session.exec(select(Promotion).where(Promotion.active).order_by(Promotion.env, Promotion.quality)))


def _active(session, env: str, quality: str) -> Promotion | None:
    return session.exec(select(Promotion).where(Promotion.env == env, Promotion.quality == quality,
                                                Promotion.active)).first()
