"""`registry verify`: every recorded file present with its recorded size and SHA-256, and every file in
the store accounted for by a row. Fixing never deletes: orphan files are moved to `<home>/trash/<stamp>/`
with a log, and only when the registry is plainly the one that owns the store; rows are never touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import select

from slatectl.errors import BadInput
from slatectl.registry.database import STORE_LOCK, Database
from slatectl.registry.db import serialize_on
from slatectl.registry.models import FILE_TABLES, Artifact
from slatectl.storage.hashing import sha256_file
from slatectl.storage.scratch import SCRATCH_GRACE_S, Leftover, remove_leftover, scratch_leftovers
from slatectl.storage.trash import new_trash_folder

# A temp file younger than this may belong to a write still in progress; it is reported, not removed.
TEMP_GRACE_S = 15 * 60
ORPHAN_REASON = "orphan: no registry row refers to this file (registry verify --fix)"


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
    foreign: list[str] = field(default_factory=list)  # files with names the store never gives: left alone
    removed: list[str] = field(default_factory=list)  # orphans moved to the trash
    trash: str | None = None  # the trash folder they went to
    scratch: list[Leftover] = field(default_factory=list)  # leftovers of killed `collect` runs
    scratch_removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No recorded file is missing or corrupted (orphans do not make a registry wrong)."""
        return not self.problems


@dataclass(frozen=True)
class _Recorded:
    kind: str
    row_id: int
    size: int
    sha256: str
    pruned: bool  # a superseded resume state whose file was removed on purpose


class Verifier:
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def trash_dir(self) -> Path:
        return self.db.home / "trash"

    @property
    def scratch_dir(self) -> Path:
        return self.db.home / "scratch"

    def verify(self, fix: bool = False, scratch_older_than_s: float = SCRATCH_GRACE_S) -> VerifyReport:
        """Check every recorded file; list orphan files and scratch leftovers; with `fix`, move the orphans
        to the trash and delete the scratch leftovers. The caller asks the person first (the CLI does)."""
        # Files are listed before rows are read, so a file registered meanwhile is at worst
        # reported as an orphan (and re-checked under the write lock before any move).
        files = list(self.db.store.iter_keys())
        recorded = self._recorded_files()
        report = VerifyReport(foreign=list(self.db.store.iter_foreign()))
        for key, row in sorted(recorded.items(), key=lambda item: (item[1].kind, item[1].row_id)):
            if row.pruned:
                continue
            report.checked += 1
            problem = _file_problem(self.db.store, key, row.size, row.sha256)
            if problem:
                report.problems.append(FileProblem(row.kind, row.row_id, key, problem))
        for key in files:
            if key in recorded:
                continue
            if self.db.store.is_temp(key) and self._is_recent(key):
                report.in_progress.append(key)
            else:
                report.orphans.append(key)
        report.scratch = scratch_leftovers(self.scratch_dir, scratch_older_than_s)
        if fix:
            if report.orphans:
                refuse_when_registry_looks_empty(recorded, report.orphans, self.db.url)
                folder = new_trash_folder(self.trash_dir)
                report.removed = self._trash_orphans(report.orphans, folder)
                report.trash = str(folder)
                if not report.removed and not any(folder.iterdir()):
                    folder.rmdir()  # everything was registered meanwhile: leave no empty trash folder
            for leftover in report.scratch:
                remove_leftover(leftover)
                report.scratch_removed.append(str(leftover.path))
        return report

    def _recorded_files(self, session=None) -> dict[str, _Recorded]:
        def collect(s) -> dict[str, _Recorded]:
            found = {}
            for model, kind in FILE_TABLES:
                pruned = model.pruned_at if model is Artifact else None
                columns = [model.id, model.storage_key, model.size, model.sha256]
                for row in s.exec(select(*columns, pruned) if pruned is not None else select(*columns)):
                    row_id, key, size, sha256 = row[:4]
                    found[key] = _Recorded(kind, row_id, size, sha256, pruned=len(row) > 4 and row[4] is not None)
            return found

        if session is not None:
            return collect(session)
        with self.db.read() as s:
            return collect(s)

    def _trash_orphans(self, candidates: list[str], folder: Path) -> list[str]:
        # Under the write lock no row can be added, and writers re-check their file inside their own
        # write transaction, so a file moved here can never end up behind a row.
        with self.db.write() as session:
            serialize_on(session, STORE_LOCK)
            recorded = self._recorded_files(session)
            still_orphans = [key for key in candidates if key not in recorded]
            return self.db.store.move_to_trash(still_orphans, folder, ORPHAN_REASON)

    def _is_recent(self, key: str) -> bool:
        try:
            return self.db.store.seconds_since_modified(key) < TEMP_GRACE_S
        except FileNotFoundError:
            return True  # finished (renamed) or removed while we looked


def refuse_when_registry_looks_empty(recorded: dict, orphans: list[str], url: str) -> None:
    """Every file an orphan means the wrong (or a re-created, empty) registry, not lost rows: refuse."""
    if not recorded:
        raise BadInput(f"the registry {url} records no files at all, yet the store holds {len(orphans)}; this looks "
                       "like the wrong or an emptied registry, so nothing was moved. Check --home / --registry-url, "
                       "or restore the registry from a backup (`slatectl registry restore BACKUP`).")


def _file_problem(store, key: str, size: int, sha256: str) -> str | None:
    path = store.path_for(key)
    if not path.is_file():
        return "missing"
    actual_size, digest = sha256_file(path)
    if actual_size != size:
        return f"size {actual_size:,} bytes, recorded {size:,}"
    if digest != sha256:
        return f"SHA-256 {digest[:12]}… differs from recorded {sha256[:12]}…"
    return None
