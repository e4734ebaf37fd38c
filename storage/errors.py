"""Storage failures. They are `BadInput` (exit 2): a missing or corrupted file is a problem with the
data the user pointed at, and the remedy is theirs (restore the file or re-create the artifact)."""

from __future__ import annotations

from slatectl.errors import BadInput


class StorageError(BadInput):
    """A stored file cannot be used as recorded."""


class MissingFile(StorageError):
    """The registry records a file that is not in the store."""


class CorruptFile(StorageError):
    """The file's size or SHA-256 differs from what the registry recorded."""
