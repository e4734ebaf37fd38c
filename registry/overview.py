"""What `slatectl inspect` shows: counts, recent runs with their checkpoint summary, liveness and disk
use, active promotions, recent datasets."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import func, select

from slatectl.registry.database import Database
from slatectl.registry.models import Artifact, Checkpoint, Dataset, Promotion, Run
from slatectl.registry.lease import DEFAULT_STALE_AFTER_S, run_liveness


@dataclass
class RunSummary:
    run: Run
    checkpoints: int
    best_val_return: float | None
    last_step: int | None
    liveness: str = ""  # the status, or `stale` for a running run whose heartbeat stopped
    disk_bytes: int = 0  # checkpoints + artifacts still on disk (resume states)


@dataclass
class Overview:
    counts: dict[str, int]
    runs: list[RunSummary]
    active_promotions: list[tuple[Promotion, Checkpoint]]
    datasets: list[Dataset]


class OverviewQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def overview(self, limit: int = 10, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> Overview:
        with self.db.read() as session:
            counts = {name: session.exec(select(func.count()).select_from(model)).one()
                      for name, model in (("runs", Run), ("checkpoints", Checkpoint), ("artifacts", Artifact),
                                          ("promotions", Promotion), ("datasets", Dataset))}
            runs = list(session.exec(select(Run).order_by(Run.id.desc()).limit(limit)))
            ids = [r.id for r in runs]
            per_run = {row[0]: row[1:] for row in session.exec(
                select(Checkpoint.run_id, func.count(), func.max(Checkpoint.val_return_mean), func.max(Checkpoint.step),
                       func.sum(Checkpoint.size))
                .where(Checkpoint.run_id.in_(ids)).group_by(Checkpoint.run_id))}
            artifact_bytes = dict(session.exec(
                select(Artifact.run_id, func.sum(Artifact.size))
                .where(Artifact.run_id.in_(ids), Artifact.pruned_at.is_(None)).group_by(Artifact.run_id)).all())
            summaries = []
            for run in runs:
                count, best, last, checkpoint_bytes = per_run.get(run.id) or (0, None, None, 0)
                summaries.append(RunSummary(run, count, best, last, run_liveness(run, stale_after_s),
                                            int(checkpoint_bytes or 0) + int(artifact_bytes.get(run.id) or 0)))
            active = list(session.exec(select(Promotion, Checkpoint).join(Checkpoint, Promotion.checkpoint_id == Checkpoint.id)
                                       .where(Promotion.active).order_by(Promotion.env, Promotion.quality)))
            datasets = list(session.exec(select(Dataset).order_by(Dataset.id.desc()).limit(limit)))
        return Overview(counts=counts, runs=summaries, active_promotions=[tuple(pair) for pair in active],
                        datasets=datasets)
