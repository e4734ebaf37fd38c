"""The registry's tables. Rows describing stored files are written once; only the flags that summarise
a run (best/last), a checkpoint's later test return, a run's end and lease, a promotion's supersession,
and an artifact's `pruned_at` (its superseded file was removed) change.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from enum import StrEnum

from sqlalchemy import DDL, JSON, BigInteger, Column, DateTime, UniqueConstraint, event
from sqlmodel import Field, SQLModel


class RunStatus(StrEnum):
    RUNNING = "running"          # a process holds (or held, if its heartbeat is stale) the run's lease
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped at a safe point on Ctrl-C / SIGTERM / SIGHUP; resumable

_AUTOINCREMENT = {"sqlite_autoincrement": True}  # ids are never reused, even after a failed insert


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no time zone, so every timestamp is stored as UTC without one."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json(default_factory):
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=False))


def _timestamp(nullable: bool = False):
    # Explicitly without time zone: PostgreSQL would otherwise read naive values in the server's zone.
    if nullable:
        return Field(default=None, sa_type=DateTime(timezone=False))
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=False))


def _size():
    return Field(sa_type=BigInteger)  # files can exceed 2 GiB, PostgreSQL's INTEGER


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    applied_at: datetime = _timestamp()


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = _AUTOINCREMENT

    id: Optional[int] = Field(default=None, primary_key=True)
    agent: str = Field(index=True)
    env: str = Field(index=True)
    seed: int
    config: dict[str, Any] = _json(dict)
    config_hash: str = Field(index=True)
    code_version: str
    command: str
    inputs: list[int] = _json(list)  # artifact ids the run was built on (GeMS, MF embeddings, …)
    status: str = Field(default=RunStatus.RUNNING.value, index=True)
    error: Optional[str] = None
    started_at: datetime = _timestamp()
    finished_at: Optional[datetime] = _timestamp(nullable=True)
    # The lease (schema v2): which process works on the run, and when it last said it was alive.
    pid: Optional[int] = None
    host: Optional[str] = None
    heartbeat_at: Optional[datetime] = _timestamp(nullable=True)
    # The population the run belongs to (schema v3): members trained together share a group id.
    group_id: Optional[str] = Field(default=None, index=True)


class Validation(SQLModel, table=True):
    """A validation result at a step, whether or not a checkpoint was saved there (learning curve)."""

    __tablename__ = "validations"
    __table_args__ = (UniqueConstraint("run_id", "step"), _AUTOINCREMENT)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    step: int
    return_mean: float
    return_std: float
    episodes: int
    created_at: datetime = _timestamp()


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step"), _AUTOINCREMENT)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    env: str = Field(index=True)
    agent: str = Field(index=True)
    step: int
    episodes: Optional[int] = None
    env_steps: Optional[int] = None
    val_return_mean: float
    val_return_std: float
    val_episodes: int
    test_return_mean: Optional[float] = None
    test_return_std: Optional[float] = None
    test_episodes: Optional[int] = None
    is_best: bool = Field(default=False, index=True)
    is_last: bool = Field(default=False)
    # Whether the agent had been updated at least once when this was saved (schema v2). False for
    # random-phase checkpoints: they are the untrained initial weights, whatever their step.
    trained: Optional[bool] = None
    storage_key: str = Field(unique=True)
    size: int = _size()
    sha256: str
    created_at: datetime = _timestamp()


class Artifact(SQLModel, table=True):
    """Any stored pipeline product that is not an agent checkpoint: logged data, GeMS, MF, rollouts."""

    __tablename__ = "artifacts"
    __table_args__ = _AUTOINCREMENT

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(index=True)
    env: Optional[str] = Field(default=None, index=True)
    config: dict[str, Any] = _json(dict)
    config_hash: str = Field(index=True)
    metrics: dict[str, Any] = _json(dict)
    parents: list[int] = _json(list)
    run_id: Optional[int] = Field(default=None, foreign_key="runs.id")
    storage_key: str = Field(unique=True)
    size: int = _size()
    sha256: str
    created_at: datetime = _timestamp()
    # Set when a superseded file (an older resume state) was removed by pruning (schema v2): the row
    # stays as history, the file is gone on purpose, and `verify` does not look for it.
    pruned_at: Optional[datetime] = _timestamp(nullable=True)


class Promotion(SQLModel, table=True):
    __tablename__ = "promotions"
    # The database itself refuses a second active promotion for an (env, quality): the partial unique
    # index ONE_ACTIVE_PROMOTION, created with the table (below the class).
    __table_args__ = (_AUTOINCREMENT,)

    id: Optional[int] = Field(default=None, primary_key=True)
    env: str = Field(index=True)
    quality: str = Field(index=True)
    checkpoint_id: int = Field(foreign_key="checkpoints.id", index=True)
    note: Optional[str] = None
    promoted_by: str
    promoted_at: datetime = _timestamp()
    active: bool = True
    superseded_by: Optional[int] = Field(default=None, foreign_key="promotions.id")


# One statement that SQLite and PostgreSQL both accept. Declaring it as an `Index(..., sqlite_where=,
# postgresql_where=)` would make SQLAlchemy import the PostgreSQL dialect (and asyncio) just to validate
# the keyword, ~40 ms of every registry command's start-up even on SQLite.
ONE_ACTIVE_PROMOTION = ("CREATE UNIQUE INDEX IF NOT EXISTS uq_promotions_one_active "
                        "ON promotions (env, quality) WHERE active")
event.listen(Promotion.__table__, "after_create", DDL(ONE_ACTIVE_PROMOTION))


class Dataset(SQLModel, table=True):
    __tablename__ = "datasets"
    __table_args__ = _AUTOINCREMENT

    id: Optional[int] = Field(default=None, primary_key=True)
    env: str = Field(index=True)
    quality: str = Field(index=True)
    policy: str  # "random", or the agent whose checkpoint acted
    checkpoint_id: Optional[int] = Field(default=None, foreign_key="checkpoints.id")
    promotion_id: Optional[int] = Field(default=None, foreign_key="promotions.id")
    episodes: int
    transitions: int
    return_mean: float
    return_std: float
    format: str
    seed: int
    storage_key: str = Field(unique=True)
    size: int = _size()
    sha256: str
    created_at: datetime = _timestamp()
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON, nullable=False))


class SweepState(StrEnum):
    PENDING = "pending"      # not started, or its worker died and it waits for a retry / `sweep resume`
    RUNNING = "running"      # a worker holds the task's lease (worker, heartbeat_at)
    FINISHED = "finished"
    FAILED = "failed"


class Sweep(SQLModel, table=True):
    """A grid of training populations (schema v4): the validated spec it was expanded from, and its state."""

    __tablename__ = "sweeps"
    __table_args__ = _AUTOINCREMENT

    id: Optional[int] = Field(default=None, primary_key=True)
    spec: dict[str, Any] = _json(dict)
    spec_hash: str
    state: str = Field(default=SweepState.PENDING.value, index=True)
    executor: str
    error: Optional[str] = None
    created_at: datetime = _timestamp()
    finished_at: Optional[datetime] = _timestamp(nullable=True)


class SweepTask(SQLModel, table=True):
    """One population of a sweep (schema v4): an agent and override set over some envs × seeds. `group_id`
    is the population its member runs belong to once it started; `attempts` counts the starts."""

    __tablename__ = "sweep_tasks"
    __table_args__ = (UniqueConstraint("sweep_id", "position"), _AUTOINCREMENT)

    id: Optional[int] = Field(default=None, primary_key=True)
    sweep_id: int = Field(foreign_key="sweeps.id", index=True)
    position: int
    agent: str
    overrides: list[str] = _json(list)
    members: list[list[Any]] = _json(list)  # [[env, seed], …] in member order
    state: str = Field(default=SweepState.PENDING.value, index=True)
    group_id: Optional[str] = None
    attempts: int = 0
    worker: Optional[str] = None
    heartbeat_at: Optional[datetime] = _timestamp(nullable=True)
    started_at: Optional[datetime] = _timestamp(nullable=True)
    finished_at: Optional[datetime] = _timestamp(nullable=True)
    error: Optional[str] = None


class BuildLock(SQLModel, table=True):
    """A lease on building one shared input (schema v4): the holder renews `expires_at` while it builds; a
    lock past it belongs to a dead builder and may be taken over. One row per key, deleted on release."""

    __tablename__ = "build_locks"

    key: str = Field(primary_key=True)
    holder: str
    acquired_at: datetime = _timestamp()
    expires_at: datetime = _timestamp()


TABLES = [model.__table__ for model in (SchemaVersion, Run, Validation, Checkpoint, Artifact, Promotion, Dataset,
                                        Sweep, SweepTask, BuildLock)]
# Tables whose rows point at files in the store, with the noun used in messages.
FILE_TABLES = ((Checkpoint, "checkpoint"), (Artifact, "artifact"), (Dataset, "dataset"))
