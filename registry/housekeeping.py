"""`registry gc`: give back the disk that nothing needs — superseded resume states (all but the newest
`keep` per run), files of resume states whose pruning was interrupted, and scratch leftovers of killed
`collect` runs. Dry run unless `apply`; recorded checkpoints, datasets and other artifacts are never
touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import select

from slatectl.errors import BadInput
from slatectl.registry.artifacts import RESUME_STATE_KIND, ArtifactRepository
from slatectl.registry.database import Database
from slatectl.registry.models import Artifact
from slatectl.storage.scratch import SCRATCH_GRACE_S, Leftover, remove_leftover, scratch_leftovers

MAX_KEEP = 1000


@dataclass
class GcReport:
    applied: bool
    superseded: list[Artifact] = field(default_factory=list)  # resume states pruned (or to prune)
    lingering: list[Artifact] = field(default_factory=list)  # pruned rows whose file is still on disk
    scratch: list[Leftover] = field(default_factory=list)

    @property
    def reclaimed_bytes(self) -> int:
        return (sum(a.size for a in self.superseded) + sum(a.size for a in self.lingering)
                + sum(s.size for s in self.scratch))


class Housekeeping:
    def __init__(self, db: Database, artifacts: ArtifactRepository) -> None:
        self.db = db
        self.artifacts = artifacts

    @property
    def scratch_dir(self) -> Path:
        return self.db.home / "scratch"

    def gc(self, *, apply: bool = False, keep_resume_states: int = 1,
           scratch_older_than_s: float = SCRATCH_GRACE_S) -> GcReport:
        if not 1 <= int(keep_resume_states) <= MAX_KEEP:
            raise BadInput(f"--keep must lie in [1, {MAX_KEEP}] (got {keep_resume_states}); 1 keeps each run resumable.")
        report = GcReport(applied=apply)
        for run_id in self._runs_with_resume_states():
            if apply:
                report.superseded += self.artifacts.prune_resume_states(run_id, keep_resume_states)
            else:
                states = self.artifacts.resume_states(run_id)
                report.superseded += states[:-keep_resume_states] if len(states) > keep_resume_states else []
        report.lingering = self.artifacts.pruned_files_on_disk()
        if apply:
            self.artifacts.remove_pruned_files(report.lingering)
        report.scratch = scratch_leftovers(self.scratch_dir, scratch_older_than_s)
        if apply:
            for leftover in report.scratch:
                remove_leftover(leftover)
        return report

    def _runs_with_resume_states(self) -> list[int]:
        with self.db.read() as session:
            ids = session.exec(select(Artifact.run_id).where(Artifact.kind == RESUME_STATE_KIND,
                                                             Artifact.pruned_at.is_(None),
                                                             Artifact.run_id.is_not(None)).distinct())
            return sorted(int(i) for i in ids)
