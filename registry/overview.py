"""What `slatectl inspect` shows: counts, recent runs with their checkpoint summary, active promotions,
recent datasets."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import func, select

from slatectl.registry.models import Artifact, Checkpoint, Dataset, Promotion, Run


@dataclass
class RunSummary:
    run: Run
    checkpoints: int
    best_val_return: float | None
    last_step: int | None


@dataclass
class Overview:
    counts: dict[str, int]
    runs: list[RunSummary]
    active_promotions: list[tuple[Promotion, Checkpoint]]
    datasets: list[Dataset]


class OverviewOps:
    def overview(self, limit: int = 10) -> Overview:
        with self.read() as session:
            counts = {name: session.exec(select(func.count()).select_from(model)).one()
                      for name, model in (("runs", Run), ("checkpoints", Checkpoint), ("artifacts", Artifact),
                                          ("promotions", Promotion), ("datasets", Dataset))}
            runs = list(session.exec(select(Run).order_by(Run.id.desc()).limit(limit)))
            per_run = {row[0]: row[1:] for row in session.exec(
                select(Checkpoint.run_id, func.count(), func.max(Checkpoint.val_return_mean), func.max(Checkpoint.step))
                .where(Checkpoint.run_id.in_([r.id for r in runs])).group_by(Checkpoint.run_id))}
            summaries = [RunSummary(run, *(per_run.get(run.id) or (0, None, None))) for run in runs]
            active = list(session.exec(select(Promotion, Checkpoint).join(Checkpoint, Promotion.checkpoint_id == Checkpoint.id)
                                       .where(Promotion.active).order_by(Promotion.env, Promotion.quality)))
            datasets = list(session.exec(select(Dataset).order_by(Dataset.id.desc()).limit(limit)))
        return Overview(counts=counts, runs=summaries, active_promotions=[tuple(pair) for pair in active],
                        datasets=datasets)
