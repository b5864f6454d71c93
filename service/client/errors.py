"""The one exception a client raises for every problem the service answers, and how long
an answer asks to wait before trying again."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Self

import httpx


class ClusterbenchError(Exception):
    """A problem the service answered (RFC 9457 problem details), or no answer at all.

    Attributes
    ----------
    status : int or None
        The HTTP status, or None when no answer came (unreachable, timed out).
    title, detail : str
        What went wrong, in short and in full; ``detail`` names the field, row or column.
    type : str
        The problem type, e.g. ``urn:clusterbench:problem:invalid-data``.
    errors : list of dict
        One entry per problem: ``loc`` (where) and ``msg``.
    retry_after : float or None
        Seconds after which the same request may succeed, when the service said.
    """

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{title} ({status}): {detail}" if status else f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors or []
        self.retry_after = retry_after

    @classmethod
    def from_problem(cls, problem: Mapping[str, Any], status: int | None = None) -> Self:
        """The error a problem object describes (a job's ``error``, a problem+json body)."""
        given = problem.get("status")
        errors = problem.get("errors")
        return cls(
            given if isinstance(given, int) else status,
            str(problem.get("title") or "Error"),
            str(problem.get("detail") or problem.get("title") or "no detail given"),
            type=str(problem.get("type") or "about:blank"),
            errors=errors if isinstance(errors, list) else None,
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> Self:
        """The error an answer of status 400 or more carries."""
        problem: Any = None
        if response.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
            try:
                problem = response.json()
            except ValueError:
                problem = None
        if isinstance(problem, dict) and ("title" in problem or "detail" in problem):
            error = cls.from_problem(problem, response.status_code)
            error.status = response.status_code
        else:
            # Not the service's own problem body: a proxy's page, a bare server error.
            text = " ".join(response.text.split())[:200]
            error = cls(
                response.status_code,
                response.reason_phrase or "Error",
                text
                or f"{response.request.method} {response.request.url} answered "
                f"{response.status_code}",
            )
        error.retry_after = retry_after(response)
        return error


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the ``Retry-After`` header asks to wait (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
