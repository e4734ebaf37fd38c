"""The artifact store: `<root>/<kind>/<uuid><suffix>` files, written atomically, read only after the
recorded size and SHA-256 have been checked."""

from __future__ import annotations

import io
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping, Sequence

from slatectl.storage.atomic import TEMP_PREFIX, fsync_dir, write_atomically
from slatectl.storage.errors import CorruptFile, MissingFile, StorageError, WriteFailed
from slatectl.storage.trash import move_to_trash
from slatectl.storage.hashing import copy_and_hash, sha256_bytes, sha256_file

_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,12}){0,2}$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}/(\.tmp-)?[A-Za-z0-9_-][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class StoredFile:
    """Where a file went and what it was: the three values the registry records."""

    key: str
    size: int
    sha256: str


class ArtifactStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- names -------------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """The file behind a key the store produced; keys from elsewhere are rejected, not joined."""
        if not _KEY.match(key) or ".." in key:
            raise StorageError(f"{key!r} is not a storage key produced by this store.")
        return self.root / key

    @staticmethod
    def _new_key(kind: str, suffix: str) -> str:
        if not _KIND.match(kind):
            raise StorageError(f"artifact kind {kind!r} must be lower-case letters, digits, '-' or '_'.")
        if not _SUFFIX.match(suffix):
            raise StorageError(f"file suffix {suffix!r} is not allowed (use something like '.pt' or '.npz').")
        return f"{kind}/{uuid.uuid4().hex}{suffix}"

    # -- writing -----------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, key: str) -> Iterator[None]:
        """OSError from the system (disk full, file too large, permissions) → WriteFailed; the atomic
        writer has already removed its temp file, so nothing is left behind."""
        try:
            yield
        except FileExistsError:  # a name clash is a bug, not the system refusing a write
            raise
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise WriteFailed(f"could not write {self.root / key} ({reason}); nothing was stored or registered. "
                              "Free disk space (see `slatectl registry gc`) or fix the folder's permissions, then "
                              "run the command again.") from exc

    def put_bytes(self, kind: str, data: bytes, suffix: str = ".bin") -> StoredFile:
        key = self._new_key(kind, suffix)
        with self._writing(key):
            write_atomically(self.path_for(key), lambda handle: handle.write(data))
        return StoredFile(key, len(data), sha256_bytes(data))

    def put_file(self, kind: str, source: Path | str, suffix: str | None = None) -> StoredFile:
        source = Path(source)
        if not source.is_file():
            raise MissingFile(f"cannot store {source}: it is not a file.")
        key = self._new_key(kind, "".join(source.suffixes[-2:]) if suffix is None else suffix)

        def copy(handle: BinaryIO) -> tuple[int, str]:
            with open(source, "rb") as src:
                return copy_and_hash(src, handle)

        with self._writing(key):
            size, digest = write_atomically(self.path_for(key), copy)
        return StoredFile(key, size, digest)

    def put_state_dict(self, kind: str, state_dict: Mapping[str, Any]) -> StoredFile:
        """torch.save into memory first, so the hash is of exactly the bytes written."""
        import torch

        buffer = io.BytesIO()
        torch.save(dict(state_dict), buffer)
        return self.put_bytes(kind, buffer.getvalue(), suffix=".pt")

    # -- reading -----------------------------------------------------------------------------------

    def check(self, key: str, size: int, sha256: str, what: str = "file") -> Path:
        """The path of a file whose size and SHA-256 match the record; MissingFile/CorruptFile otherwise."""
        path = self.path_for(key)
        if not path.is_file():
            raise MissingFile(
                f"the {what} is missing from the artifact store (expected {path}). Restore the file or run "
                "`slatectl registry verify` to list every missing file."
            )
        actual_size = path.stat().st_size
        if actual_size != size:
            raise CorruptFile(
                f"the {what} at {path} has {actual_size} bytes but the registry recorded {size}; it is "
                "truncated or was replaced. Restore it from a backup or re-create the artifact."
            )
        _, digest = sha256_file(path)
        if digest != sha256:
            raise CorruptFile(
                f"the {what} at {path} does not match its recorded SHA-256 (recorded {sha256[:12]}…, found "
                f"{digest[:12]}…); the file is corrupted. Restore it from a backup or re-create the artifact."
            )
        return path

    def read_verified(self, key: str, size: int, sha256: str, what: str = "file") -> bytes:
        """The bytes, hashed after reading so the checked bytes are the ones returned."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if data is None or len(data) != size or sha256_bytes(data) != sha256:
            self.check(key, size, sha256, what)  # raises with the precise reason
            data = path.read_bytes()  # the file changed under us and is now fine: read it again
            if len(data) != size or sha256_bytes(data) != sha256:
                raise CorruptFile(f"the {what} at {path} changed while it was being read; try again.")
        return data

    def load_state_dict(self, key: str, size: int, sha256: str, what: str = "state dict",
                        map_location: str = "cpu") -> dict[str, Any]:
        import torch

        data = self.read_verified(key, size, sha256, what)
        try:
            # weights_only: a checkpoint is data, never code to execute.
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except Exception as exc:  # unpickling errors come in many types; all mean "not a plain state dict"
            raise CorruptFile(f"the {what} matches its recorded SHA-256 but is not a plain tensor state dict "
                              f"that can be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).") from exc

    # -- housekeeping --------------------------------------------------------------------------------

    def iter_keys(self) -> Iterator[str]:
        """Every file in the store with a name the store could have given it, temp files of unfinished
        writes included (files with other names: `iter_foreign`)."""
        for key in self._iter_files():
            if _KEY.match(key):
                yield key

    def iter_foreign(self) -> Iterator[str]:
        """Files in the store's kind folders with names the store never gives (`.DS_Store`, `has space.pt`,
        an editor's backup): put there by someone else, so slatectl reports them and leaves them alone."""
        for key in self._iter_files():
            if not _KEY.match(key):
                yield key

    def _iter_files(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for kind_dir in sorted(self.root.iterdir()):
            if not kind_dir.is_dir() or not _KIND.match(kind_dir.name):
                continue
            for path in sorted(kind_dir.iterdir()):
                if path.is_file():
                    yield f"{kind_dir.name}/{path.name}"

    @staticmethod
    def is_temp(key: str) -> bool:
        return key.split("/", 1)[-1].startswith(TEMP_PREFIX)

    def seconds_since_modified(self, key: str) -> float:
        return time.time() - self.path_for(key).stat().st_mtime

    def remove(self, key: str) -> None:
        path = self.path_for(key)
        path.unlink(missing_ok=True)
        try:
            fsync_dir(path.parent)
        except OSError:  # the removal itself happened; durability of it is best effort
            pass

    def move_to_trash(self, keys: Sequence[str], folder: Path, reason: str) -> list[str]:
        """Move the files of `keys` into the trash `folder` (see storage.trash); the keys moved."""
        moved = move_to_trash(folder, [(self.path_for(key), key) for key in keys], reason)
        return [str(path.relative_to(folder).as_posix()) for path in moved]

    def exists(self, key: str, size: int | None = None) -> bool:
        path = self.path_for(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        return size is None or stat.st_size == size

