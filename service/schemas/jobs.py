"""An asynchronous job: its states, progress and record, as the API answers them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.schemas.common import Problem


class JobState(StrEnum):
    """Where a job is: queued, then running, then finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has ended (it changes no more)."""
        return self in FINISHED_STATES


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def iso_utc(moment: datetime) -> str:
    """``2026-01-01T12:00:00.000Z``: ISO 8601 in UTC, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# A moment the API answers as ISO 8601 UTC text, and the client reads as a datetime.
Timestamp = Annotated[datetime, PlainSerializer(iso_utc, return_type=str)]

# The API always sends every field of a job; a client reads one that says less (an older
# service: a queued job with no progress yet) with these defaults. The schema says what the
# API sends: every field required, none of them null unless it may be.
_SENT_IN_FULL = ConfigDict(json_schema_serialization_defaults_required=True)


class JobProgress(BaseModel):
    # How far a job has come: `done` of `total` steps, in `stage`.

    model_config = _SENT_IN_FULL

    done: int = Field(
        0, description="Steps done (strategies fitted); never decreases.", examples=[1]
    )
    total: int | SkipJsonSchema[None] = Field(
        None, description="Steps in all; `done` reaches it on success.", examples=[3]
    )
    stage: str | SkipJsonSchema[None] = Field(
        None,
        description="What runs now: `queued`, a strategy's name, `storing`, or `done`.",
        examples=["random"],
    )


class Job(BaseModel):
    """A long computation run in the background: poll it, follow its events, or cancel it."""

    # The API's answer, and what the client (service.client) returns for it. The job's
    # stored record is service.jobs.records.JobRecord.

    model_config = _SENT_IN_FULL

    id: str = Field(description="The job's id (sha256-sized hex).")
    kind: Literal["benchmark", "sweep", "stability"] | SkipJsonSchema[None] = Field(
        None,
        description="What the job computes: `POST /v1/benchmarks`, `/v1/sweeps` or "
        "`/v1/stability` asked with `Prefer: respond-async`.",
    )
    state: JobState
    progress: JobProgress = Field(default_factory=JobProgress)
    created_at: Timestamp | SkipJsonSchema[None] = Field(
        None, description="ISO 8601, UTC.", examples=["2026-01-01T12:00:00.000Z"]
    )
    started_at: Timestamp | None = Field(
        None, description="When it began computing (ISO 8601, UTC)."
    )
    finished_at: Timestamp | None = Field(None, description="When it ended (ISO 8601, UTC).")
    result_url: str | None = Field(
        None,
        description="Where the result is, once the job has succeeded: "
        "`/v1/benchmarks/{id}`, `/v1/sweeps/{id}` or `/v1/stability/{id}`.",
        examples=["/v1/benchmarks/<id>"],
    )
    error: Problem | None = Field(None, description="Why it failed or was cancelled, as a problem.")

    @field_validator("progress", mode="before")
    @classmethod
    def _no_progress_yet(cls, value: Any) -> Any:
        # A queued job may not report progress at all.
        return JobProgress() if value is None else value

    @property
    def finished(self) -> bool:
        """Whether the job has ended."""
        return self.state.finished


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(
        description="Pass as `?cursor=` for the next page; null on the last page."
    )
