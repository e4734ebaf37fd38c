"""Storage failures. A missing or corrupted file is `BadInput` (exit 2): a problem with the data the
user pointed at, whose remedy is theirs (restore the file or re-create the artifact). A write that the
system refused (disk full, file too large, permissions) is `WriteFailed` (exit 1): the job failed, and
nothing was registered."""

from __future__ import annotations

from slatectl.errors import BadInput, JobFailed


class StorageError(BadInput):
    """A stored file cannot be used as recorded."""


class MissingFile(StorageError):
    """The registry records a file that is not in the store."""


class CorruptFile(StorageError):
    """The file's size or SHA-256 differs from what the registry recorded."""


class WriteFailed(JobFailed):
    """The operating system refused a write into the store (ENOSPC, EFBIG, EACCES…); no file was left."""
