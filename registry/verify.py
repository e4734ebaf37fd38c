"""`registry verify`: every recorded file present with its recorded size and SHA-256, and every file in
the store accounted for by a row. Fixing only ever removes orphan files; rows are never touched."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import select

from slatectl.registry.checkpoints import STORE_LOCK
from slatectl.registry.db import serialize_on
from slatectl.registry.models import FILE_TABLES
from slatectl.storage.hashing import sha256_file

# A temp file younger than this may belong to a write still in progress; it is reported, not removed.
TEMP_GRACE_S = 15 * 60


@dataclass
class FileProblem:
    kind: str  # checkpoint | artifact | dataset
    row_id: int
    key: str
    problem: str


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[FileProblem] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No recorded file is missing or corrupted (orphans do not make a registry wrong)."""
        return not self.problems


class VerifyOps:
    def verify(self, fix: bool = False) -> VerifyReport:
        """Check every recorded file; list orphan files; with `fix`, remove the orphans."""
        # Files are listed before rows are read, so a file registered meanwhile is at worst
        # reported as an orphan (and re-checked under the write lock before any removal).
        files = list(self.store.iter_keys())
        recorded = self._recorded_files()
        report = VerifyReport()
        for key, (kind, row_id, size, sha256) in sorted(recorded.items(), key=lambda item: (item[1][0], item[1][1])):
            report.checked += 1
            problem = _file_problem(self.store, key, size, sha256)
            if problem:
                report.problems.append(FileProblem(kind, row_id, key, problem))
        for key in files:
            if key in recorded:
                continue
            if self.store.is_temp(key) and self._is_recent(key):
                report.in_progress.append(key)
            else:
                report.orphans.append(key)
        if fix and report.orphans:
            report.removed = self._remove_orphans(report.orphans)
        return report

    def _recorded_files(self, session=None) -> dict[str, tuple[str, int, int, str]]:
        def collect(s) -> dict[str, tuple[str, int, int, str]]:
            found = {}
            for model, kind in FILE_TABLES:
                for row_id, key, size, sha256 in s.exec(select(model.id, model.storage_key, model.size, model.sha256)):
                    found[key] = (kind, row_id, size, sha256)
            return found

        if session is not None:
            return collect(session)
        with self.read() as s:
            return collect(s)

    def _remove_orphans(self, candidates: list[str]) -> list[str]:
        # Under the write lock no row can be added, and writers re-check their file inside their own
        # write transaction, so a file removed here can never end up behind a row.
        removed = []
        with self.write() as session:
            serialize_on(session, STORE_LOCK)
            recorded = self._recorded_files(session)
            for key in candidates:
                if key not in recorded:
                    self.store.remove(key)
                    removed.append(key)
        return removed

    def _is_recent(self, key: str) -> bool:
        try:
            return self.store.seconds_since_modified(key) < TEMP_GRACE_S
        except FileNotFoundError:
            return True  # finished (renamed) or removed while we looked


def _file_problem(store, key: str, size: int, sha256: str) -> str | None:
    path = store.path_for(key)
    if not path.is_file():
        return "missing"
    actual_size, digest = sha256_file(path)
    if actual_size != size:
        return f"size {actual_size} bytes, recorded {size}"
    if digest != sha256:
        return f"SHA-256 {digest[:12]}… differs from recorded {sha256[:12]}…"
    return None
