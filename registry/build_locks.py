"""Build locks: a lease per shared input (logged data, GeMS, MF of one env and config) so that, of many
workers on many machines that need the same input, exactly one builds it and the others wait for it.

A lock is a row keyed by the input; its holder renews `expires_at` while it builds. A lock past
`expires_at` belongs to a builder that died (its machine was lost): the next `acquire` takes it over.
The registry (not a file lock) is the one place every worker of a cluster sees.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update

from slatectl.errors import JobFailed
from slatectl.registry.database import Database
from slatectl.registry.db import serialize_on
from slatectl.registry.models import BuildLock, utcnow


class BuildLockRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, key: str, holder: str, lease_s: float) -> bool:
        """Take the lock on `key` for `holder` for `lease_s` seconds: True when it is now ours (it was
        free, expired, or already ours), False when another holder's lease is live."""
        now = utcnow()
        with self.db.write() as session:
            serialize_on(session, f"build:{key}")
            lock = session.get(BuildLock, key)
            if lock is not None:
                session.refresh(lock)
                if lock.holder != holder and lock.expires_at > now:
                    return False
                lock.holder, lock.acquired_at = holder, now
                lock.expires_at = now + timedelta(seconds=lease_s)
            else:
                lock = BuildLock(key=key, holder=holder, acquired_at=now, expires_at=now + timedelta(seconds=lease_s))
            session.add(lock)
        return True

    def renew(self, key: str, holder: str, lease_s: float) -> None:
        """Extend our lease; JobFailed when the lock was taken over (our lease had expired)."""
        with self.db.write() as session:
            changed = session.execute(update(BuildLock).where(BuildLock.key == key, BuildLock.holder == holder)
                                      .values(expires_at=utcnow() + timedelta(seconds=lease_s))).rowcount
        if changed == 0:
            raise JobFailed(f"the build lock {key!r} was taken over by another worker; this build stops.")

    def release(self, key: str, holder: str) -> None:
        with self.db.write() as session:
            session.execute(delete(BuildLock).where(BuildLock.key == key, BuildLock.holder == holder))

    def holder(self, key: str) -> BuildLock | None:
        with self.db.read() as session:
            return session.get(BuildLock, key)
