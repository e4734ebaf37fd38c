"""MINIMAL STAND-INS (training branch) for the run-lifecycle operations the training loop calls:
`heartbeat`, `claim_run` and `prune_resume_states`. The registry's own lease work (a heartbeat column,
`claim_run` refusing a live lease, `stale` runs) replaces this module at merge; the signatures are the
ones agreed for it.
"""

from __future__ import annotations

from sqlmodel import select

from slatectl.errors import BadInput
from slatectl.registry.models import Artifact
from slatectl.registry.runs import _get_run

RESUME_STATE_KIND = "resume-state"


class RunLifecycleOps:
    def heartbeat(self, run_id: int) -> None:
        """Renew the run's lease (stand-in: checks the run exists; no lease is stored yet)."""
        with self.read() as session:
            _get_run(session, run_id)

    def claim_run(self, run_id: int) -> None:
        """Take over a run for `--resume`: it becomes `running` again (stand-in: no lease check yet)."""
        with self.write() as session:
            run = _get_run(session, run_id)
            run.status, run.error, run.finished_at = "running", None, None
            session.add(run)

    def prune_resume_states(self, run_id: int, keep: int = 1) -> list[int]:
        """Delete the run's resume states except the newest `keep` (by step); returns the deleted ids.

        Rows go first, in one transaction, then their files: a row never points at a missing file."""
        if keep < 1:
            raise BadInput(f"keep must be >= 1 (got {keep}).")
        with self.write() as session:
            _get_run(session, run_id)
            states = list(session.exec(select(Artifact).where(Artifact.kind == RESUME_STATE_KIND,
                                                               Artifact.run_id == run_id)))
            states.sort(key=lambda a: (int(a.config.get("step", -1)), a.id), reverse=True)
            doomed = [(a.id, a.storage_key) for a in states[keep:]]
            for artifact in states[keep:]:
                session.delete(artifact)
        for _, key in doomed:
            self.store.remove(key)
        return [artifact_id for artifact_id, _ in doomed]
