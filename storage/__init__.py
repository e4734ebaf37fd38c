"""Content store for artifact files: atomic writes under store-chosen names, verified reads.

The registry records each file's key, size and SHA-256; nothing outside this package builds a path.
"""

from slatectl.storage.errors import CorruptFile, MissingFile, StorageError, WriteFailed
from slatectl.storage.store import ArtifactStore, StoredFile

__all__ = ["ArtifactStore", "StoredFile", "StorageError", "MissingFile", "CorruptFile", "WriteFailed"]
