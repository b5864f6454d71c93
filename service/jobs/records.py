"""A job's record: what it asks, where it is, who runs it; kept in its own SQLite file
(``<data_dir>/jobs.sqlite3``, WAL) or in Redis (:mod:`service.jobs.redis_records`), so that it
outlives the process that runs it. The life of a job (running it, watching it,
cancelling it, taking over a stopped process's jobs) is :mod:`service.jobs`; what the API
answers for it is :class:`service.schemas.Job`."""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from service import processes
from service.errors import ComputeCancelledError, JobOrphanedError, ServiceError
from service.questions import KINDS
from service.schemas import FINISHED_STATES, Job, JobState
from service.sqlite import Database, one_of, page_query

logger = logging.getLogger(__name__)

# A runner writes its job's heartbeat this often; a job of another host whose heartbeat
# is older than STALE_S has lost its process.
HEARTBEAT_S = 5.0
STALE_S = 60.0
# The owner of a job whose server stopped (SIGTERM) before it finished and handed it over:
# no process runs it, and any process takes it over at once rather than after STALE_S.
RELEASED = "released"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    request BLOB NOT NULL,
    state TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    stage TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error BLOB,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_key_state ON jobs (key, state);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
"""


def _moment(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def problem_of(error: ServiceError) -> dict[str, Any]:
    """A ServiceError as the problem object a job's ``error`` holds."""
    return {
        "type": error.type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "errors": error.errors,
    }


CANCELLED = problem_of(ComputeCancelledError("the job was cancelled (DELETE) before it finished"))
WITHDRAWN = problem_of(
    ComputeCancelledError(
        "you cancelled this job (DELETE); other tenants asked the same question and it goes "
        "on for them"
    )
)
UNEXPECTED = problem_of(ServiceError("an unexpected error occurred; it has been logged"))
ORPHANED = problem_of(
    JobOrphanedError(
        "the server process running this job stopped before it finished; ask again to compute it"
    )
)


@dataclass
class JobRecord:
    """One job's record. ``key`` is the id of the result the job computes (a benchmark's,
    a sweep's or a stability run's, as ``kind`` says); ``request`` asks it again."""

    id: str
    kind: str
    key: str
    request: dict[str, Any]
    state: JobState
    done: int
    total: int
    stage: str
    created: float
    owner: str
    started: float | None = None
    finished: float | None = None
    error: dict[str, Any] | None = None
    seq: int = 0
    heartbeat: float = 0.0

    @classmethod
    def new(
        cls, *, kind: str, key: str, request: dict[str, Any], total: int, owner: str, seq: int = 0
    ) -> JobRecord:
        """A job just asked: queued, nothing done yet, its heartbeat its creation."""
        created = time.time()
        return cls(
            id=uuid.uuid4().hex + uuid.uuid4().hex,
            kind=kind,
            key=key,
            request=request,
            state=JobState.QUEUED,
            done=0,
            total=total,
            stage="queued",
            created=created,
            owner=owner,
            seq=seq,
            heartbeat=created,
        )

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> JobRecord:
        """A job from its stored fields (decoded); fields this version does not know are
        left out."""
        known = {name: values[name] for name in FIELDS if name in values}
        if "state" in known:
            known["state"] = JobState(known["state"])
        return cls(**known)

    def fields(self) -> dict[str, Any]:
        """Every field by name, as a store writes the whole record."""
        return {name: getattr(self, name) for name in FIELDS}

    def saved(self, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """What a save writes: the job's progress with ``now`` as its heartbeat, and
        apart, the fields a save never changes (:data:`FIXED`)."""
        values = self.fields() | {"heartbeat": now}
        fixed = {name: values.pop(name) for name in FIXED}
        return values, fixed

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    def public(self) -> Job:
        """The job as the API shows it (a kind this version does not know as null: the
        record of a job a newer version started, failed here)."""
        return Job.model_validate(
            {
                "id": self.id,
                "kind": self.kind if self.kind in KINDS else None,
                "state": self.state,
                "progress": {"done": self.done, "total": self.total, "stage": self.stage},
                "created_at": _moment(self.created),
                "started_at": _moment(self.started),
                "finished_at": _moment(self.finished),
                "result_url": self.result_url if self.state == JobState.SUCCEEDED else None,
                "error": self.error,
            }
        )

    @property
    def result_url(self) -> str | None:
        """Where the result is read once the job has succeeded."""
        kind = KINDS.get(self.kind)
        return None if kind is None else kind.result_url(self.key)

    def snapshot(self) -> tuple[Any, ...]:
        """What a watcher compares to tell whether the job changed."""
        return (self.state, self.done, self.total, self.stage, self.finished)


FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
# The fields a job's record is created with and a save never changes: written again only
# with a record that is gone. The owner is changed by claim() only: a runner that lost its
# job (taken over) must not take it back.
FIXED = ("id", "kind", "key", "request", "created", "seq", "owner")


def orphan_end(now: float) -> dict[str, Any]:
    """The fields written of an active job found with no live process (when its question
    is asked again): failed, ended ``now``, with why."""
    return {"state": JobState.FAILED, "finished": now, "error": ORPHANED}


def owner_alive(job: JobRecord, me: str) -> bool:
    """Whether the process that owns a job (``"<pid>-<hex>@<host>"``) still runs.

    On this host, by its process id; on another (a container, a machine sharing the
    directory), by the job's heartbeat.
    """
    owner = job.owner
    if owner == me:
        return True
    if owner == RELEASED:
        return False
    process, _, host = owner.partition("@")
    if host != me.partition("@")[2]:
        return time.time() - job.heartbeat < STALE_S
    pid_text, _, _ = process.partition("-")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # an earlier life of this process (another app on the same directory)
    return processes.pid_alive(pid)


@dataclass(frozen=True)
class JobQuery:
    """Which jobs a listing shows: up to ``limit``, newest first, older than sequence
    number ``before`` and in ``state`` (either: any when None); only those whose id is in
    ``among`` when it is given (a tenant's own)."""

    state: JobState | None
    limit: int
    before: int | None
    among: Sequence[str] | None = None


class JobBackend(ABC):
    """What the job manager needs of a job store: :class:`JobStore` (embedded SQLite) or
    :class:`service.jobs.redis_records.RedisJobStore` (shared by replicas). What a store
    promises is said here once; each says only what its backend adds."""

    def create_or_join(
        self,
        *,
        kind: str,
        key: str,
        request: dict[str, Any],
        total: int,
        owner: str,
        alive: Callable[[JobRecord], bool],
    ) -> tuple[JobRecord, bool]:
        """The active job for ``key`` if a live process runs one, else a new queued one.

        Returns the job and whether it is new. An active job whose process is gone is
        marked failed first (it would otherwise be re-run only at the next start-up).
        """

        def new(seq: int) -> JobRecord:
            return JobRecord.new(
                kind=kind, key=key, request=request, total=total, owner=owner, seq=seq
            )

        return self._create_or_join(key, new, alive)

    @abstractmethod
    def _create_or_join(
        self, key: str, new: Callable[[int], JobRecord], alive: Callable[[JobRecord], bool]
    ) -> tuple[JobRecord, bool]:
        """:meth:`create_or_join` in this store, atomically: ``new(seq)`` is the job to
        create, numbered ``seq`` (or 0 where the store numbers it)."""

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def save(self, job: JobRecord) -> bool:
        """Write ``job``'s state and progress, unless its record has finished meanwhile
        (cancelled by another process); a record that is gone is written whole again.
        Returns whether it was written."""

    @abstractmethod
    def beat(self, job_id: str, owner: str) -> str | None:
        """Record that ``owner`` still runs the job; the job's state (None if gone)."""

    def page(
        self,
        *,
        state: JobState | None,
        limit: int,
        before: int | None,
        among: Sequence[str] | None = None,
    ) -> list[JobRecord]:
        """The jobs a listing shows (see :class:`JobQuery`), newest first."""
        return self.select(JobQuery(state, limit, before, among))

    @abstractmethod
    def select(self, query: JobQuery) -> list[JobRecord]:
        """The jobs ``query`` names, newest first."""

    @abstractmethod
    def orphans(self, alive: Callable[[JobRecord], bool]) -> list[JobRecord]:
        """Active jobs whose process is gone, oldest first."""

    @abstractmethod
    def claim(self, job_id: str, old_owner: str, new_owner: str) -> bool:
        """Take an orphaned job over, unless another process just did."""

    @abstractmethod
    def release(self, job_id: str, owner: str) -> bool:
        """Hand over an active job ``owner`` runs and is stopping: queued again, owned by
        :data:`RELEASED`, for any process to take over at once. Returns whether it was."""

    @abstractmethod
    def prune(self, before: float, limit: int = 1000) -> list[str]:
        """Remove up to ``limit`` jobs that finished before ``before``; their ids."""

    @abstractmethod
    def close(self) -> None: ...


def _rows(db: sqlite3.Connection) -> None:
    db.row_factory = sqlite3.Row


# The columns that hold a field as JSON; the others hold it as it is.
_JSON_COLUMNS = ("request", "error")


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """A record's fields as the columns of ``jobs``."""
    return {
        name: orjson.dumps(value) if name in _JSON_COLUMNS and value is not None else value
        for name, value in fields.items()
    }


def _set(columns: dict[str, Any]) -> str:
    return ", ".join(f"{name} = ?" for name in columns)


def _insert(db: sqlite3.Connection, fields: dict[str, Any], verb: str = "") -> sqlite3.Cursor:
    columns = _columns(fields)
    return db.execute(
        f"INSERT {verb} INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        tuple(columns.values()),
    )


class JobStore(JobBackend):
    """Job records in ``path`` (SQLite, WAL), shared by every process on the directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(
            path, schema=SCHEMA, what="jobs database", busy_timeout_s=30.0, prepare=_rows
        )
        self._connection = self._db.connection
        self._transaction = self._db.transaction

    @staticmethod
    def _job(row: sqlite3.Row) -> JobRecord:
        values = dict(row)
        for name in _JSON_COLUMNS:
            if values[name] is not None:
                values[name] = orjson.loads(values[name])
        return JobRecord.from_fields(values)

    def _create_or_join(
        self, key: str, new: Callable[[int], JobRecord], alive: Callable[[JobRecord], bool]
    ) -> tuple[JobRecord, bool]:
        with self._transaction() as db:
            for row in db.execute(
                "SELECT * FROM jobs WHERE key = ? AND state IN ('queued', 'running')"
                " ORDER BY seq DESC",
                (key,),
            ).fetchall():
                found = self._job(row)
                if alive(found):
                    return found, False
                self._fail_orphan(db, found)
            job = new(0)
            fields = job.fields()
            del fields["seq"]  # numbered by SQLite
            job.seq = _insert(db, fields).lastrowid or 0
        return job, True

    @staticmethod
    def _fail_orphan(db: sqlite3.Connection, job: JobRecord) -> None:
        end = _columns(orphan_end(time.time()))
        db.execute(f"UPDATE jobs SET {_set(end)} WHERE id = ?", (*end.values(), job.id))

    def get(self, job_id: str) -> JobRecord | None:
        row = self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._job(row)

    def save(self, job: JobRecord) -> bool:
        progress, fixed = job.saved(time.time())
        columns = _columns(progress)
        with self._transaction() as db:
            written = db.execute(
                f"UPDATE jobs SET {_set(columns)} WHERE id = ? AND state IN ('queued', 'running')",
                (*columns.values(), job.id),
            ).rowcount
            if not written:
                written = _insert(db, progress | fixed, "OR IGNORE").rowcount
        return bool(written)

    def beat(self, job_id: str, owner: str) -> str | None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET heartbeat = ? WHERE id = ? AND owner = ?",
                (time.time(), job_id, owner),
            )
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row["state"])

    def select(self, query: JobQuery) -> list[JobRecord]:
        state, before = query.state, query.before
        sql, args = page_query(
            "SELECT * FROM jobs",
            [
                one_of("id", query.among),
                None if state is None else ("state = ?", [state]),
                None if before is None else ("seq < ?", [before]),
            ],
            order="seq DESC",
            limit=query.limit,
        )
        rows = self._connection().execute(sql, args).fetchall()
        return [self._job(row) for row in rows]

    def orphans(self, alive: Callable[[JobRecord], bool]) -> list[JobRecord]:
        rows = (
            self._connection()
            .execute("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq")
            .fetchall()
        )
        return [job for job in map(self._job, rows) if not alive(job)]

    def claim(self, job_id: str, old_owner: str, new_owner: str) -> bool:
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE jobs SET owner = ?, heartbeat = ? WHERE id = ? AND owner = ?"
                    " AND state IN ('queued', 'running')",
                    (new_owner, time.time(), job_id, old_owner),
                ).rowcount
            )

    def release(self, job_id: str, owner: str) -> bool:
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE jobs SET owner = ?, heartbeat = 0, state = 'queued', stage = ?"
                    " WHERE id = ? AND owner = ? AND state IN ('queued', 'running')",
                    (RELEASED, RELEASED, job_id, owner),
                ).rowcount
            )

    def prune(self, before: float, limit: int = 1000) -> list[str]:
        with self._transaction() as db:
            rows = db.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state IN"
                " ('succeeded', 'failed', 'cancelled') AND finished < ? LIMIT ?) RETURNING id",
                (before, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        self._db.close()
