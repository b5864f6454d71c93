"""``/v1/jobs``: long computations in the background, their progress, events and cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from service.api.auth import Caller
from service.api.deps import (
    ID_PATTERN,
    Tenants,
    decode_cursor,
    encode_cursor,
    problems,
    split_page,
)
from service.engine import BenchmarkEngine
from service.errors import JobNotFoundError
from service.jobs.manager import JobManager
from service.jobs.records import JobQuery, JobRecord
from service.questions import Question
from service.schemas import FINISHED_STATES, Job, JobList, JobState
from service.tenants import JOB, Tenancy

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_PAGE = 100


async def get_jobs(request: Request) -> JobManager:
    jobs: JobManager = request.state.jobs
    return jobs


Jobs = Annotated[JobManager, Depends(get_jobs)]
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="The job's id (64 hex digits).")]

JOB_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Job,
        "description": "With `Prefer: respond-async`: the job computing the result; "
        "`Location` names it.",
        "headers": {
            "Location": {
                "description": "The job: `/v1/jobs/{job_id}`.",
                "schema": {"type": "string"},
            },
            "Preference-Applied": {
                "description": "`respond-async` (RFC 7240).",
                "schema": {"type": "string"},
            },
        },
    }
}


def prefers_async(request: Request) -> bool:
    """Whether the request's ``Prefer`` header asks for ``respond-async`` (RFC 7240)."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            if preference.split(";")[0].strip().lower() == "respond-async":
                return True
    return False


def _json(job: JobRecord, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        job.public().model_dump_json(), status, headers=headers, media_type="application/json"
    )


async def respond_async(
    request: Request, question: Question, caller: str | None, tenants: Tenancy
) -> Response | None:
    """202 and the job computing ``question``; None when the result is stored already
    (then the route answers 200 with it, as without the preference)."""
    if await question.stored(request.state.engine):
        return None
    jobs: JobManager = request.state.jobs
    job = await jobs.submit(question, caller)
    await tenants.claim_job(caller, job.id, question.id)
    return _json(
        job,
        202,
        {
            "Location": f"/v1/jobs/{job.id}",
            "Preference-Applied": "respond-async",
            "Vary": "Prefer",
        },
    )


async def held_result(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, kind: str, result_id: str
) -> bytes | None:
    """The stored sweep or stability run (``kind``), if the caller holds it or asked for
    the job that computed it (then it is the caller's now); else None."""
    if await tenants.holds(caller, kind, result_id):
        return await engine.cached_document(kind, result_id)
    if not await tenants.awaits_result(caller, result_id):
        return None
    body = await engine.cached_document(kind, result_id)
    if body is not None:
        dataset_id = orjson.loads(body)["dataset"]["id"]
        await tenants.claim_result(caller, kind, result_id, dataset_id, len(body))
    return body


def _cursor(seq: int) -> str:
    return encode_cursor(f"jobs:{seq}")


def _after(text: str) -> int:
    """The job's ``seq`` a cursor's text from :func:`_cursor` names; ValueError for
    anything else."""
    prefix, _, seq = text.partition(":")
    # ASCII digits that fit SQLite's integers: anything else was not made here.
    if prefix != "jobs" or not (seq.isascii() and seq.isdigit() and len(seq) <= 18):
        raise ValueError(text)
    return int(seq)


@router.get(
    "",
    response_model=JobList,
    responses=problems(422),
    summary="List jobs, newest first",
)
async def list_jobs(
    jobs: Jobs,
    caller: Caller,
    tenants: Tenants,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="`next_cursor` of the previous page."),
    ] = None,
) -> Response:
    """Jobs newest first, a page at a time; `next_cursor` leads to the next page."""
    before = None if cursor is None else decode_cursor(cursor, _after)
    among = None if caller is None else await tenants.held_jobs(caller)
    rows = await jobs.page(JobQuery(state=state, limit=limit + 1, before=before, among=among))
    page, more = split_page(rows, limit)
    body = JobList(
        jobs=[job.public() for job in page], next_cursor=_cursor(page[-1].seq) if more else None
    )
    return Response(body.model_dump_json(), media_type="application/json")


@router.get(
    "/{job_id}",
    response_model=Job,
    responses=problems(404, 422),
    summary="Get a job",
)
async def get_job(job_id: JobId, jobs: Jobs, caller: Caller, tenants: Tenants) -> Response:
    """The job's state and progress; once it has succeeded, `result_url` names the result."""
    return _json(await _held_job(jobs, tenants, caller, job_id))


async def _held_job(
    jobs: JobManager, tenants: Tenancy, caller: str | None, job_id: str
) -> JobRecord:
    """The job, if the caller holds it; else 404, as if it did not exist."""
    job = await jobs.get(job_id) if await tenants.holds(caller, JOB, job_id) else None
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


@router.delete(
    "/{job_id}",
    response_model=Job,
    responses=problems(404, 409, 422),
    summary="Cancel a job",
)
async def cancel_job(job_id: JobId, jobs: Jobs, caller: Caller, tenants: Tenants) -> Response:
    """Stop the job's computation (its CPU is free within 2 s); a finished job is a 409.

    When other tenants asked the same question and wait for this same job, a DELETE
    withdraws only the caller: the job is cancelled for them (and no longer theirs: 404
    afterwards) and goes on for the others.
    """
    if not await tenants.holds(caller, JOB, job_id):
        raise JobNotFoundError(f"no job with id {job_id}")
    if caller is not None and await tenants.others_hold(caller, JOB, job_id):
        job = await jobs.withdraw(job_id, lambda: tenants.release(caller, JOB, job_id))
    else:
        job = await jobs.cancel(job_id)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return _json(job)


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={
        200: {
            "description": "Server-sent events: `progress` (data: the job) at each step, then "
            "one of `succeeded`, `failed` or `cancelled`, then the stream ends.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(404, 422),
    },
    summary="Follow a job's progress as server-sent events",
)
async def job_events(
    job_id: JobId, request: Request, jobs: Jobs, caller: Caller, tenants: Tenants
) -> Response:
    """The job at each step as `text/event-stream`, until it has finished."""
    await _held_job(jobs, tenants, caller, job_id)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for job in jobs.watch(job_id):
            yield ServerSentEvent(
                data=job.public().model_dump_json(),
                event=job.state if job.is_finished else "progress",
            )

    return EventSourceResponse(events(), ping=request.app.state.settings.events_ping_s)


class JobCollector(Collector):
    """Jobs by state, the queue, and how long finished jobs took, read when scraped."""

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        jobs = self.jobs
        yield GaugeMetricFamily(
            "clusterbench_jobs_queued",
            "Jobs of this process waiting for a worker.",
            value=jobs.count(JobState.QUEUED),
        )
        yield GaugeMetricFamily(
            "clusterbench_jobs_running",
            "Jobs of this process computing.",
            value=jobs.count(JobState.RUNNING),
        )
        finished = CounterMetricFamily(
            "clusterbench_jobs_finished",
            "Jobs this process ended, by final state.",
            labels=["state"],
        )
        for state in FINISHED_STATES:
            finished.add_metric([state], jobs.stats.finished[state])
        yield finished
        stats = jobs.stats
        cumulative, buckets = 0, []
        for bound, count in zip((*stats.buckets, float("inf")), stats.bucket_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        yield HistogramMetricFamily(
            "clusterbench_job_duration_seconds",
            "Seconds from a job's creation to its end.",
            buckets=buckets,
            sum_value=stats.duration_sum,
        )
        yield GaugeMetricFamily(
            "clusterbench_job_event_streams",
            "Clients following a job's events now.",
            value=jobs.watchers,
        )
