"""A fake service for the client's tests: scripted answers in order, and what was sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson

from service.client import Client

ID = "ab" * 32


RESULT: dict[str, Any] = {
    "id": ID,
    "cached": False,
    "dataset": {
        "id": "cd" * 32,
        "name": "iris",
        "n_samples": 150,
        "n_features": 4,
        "has_labels": True,
    },
    "n_clusters": 3,
    "params": {
        "dataset": "cd" * 32,
        "n_clusters": 3,
        "strategies": [{"init": "random", "n_init": 4}],
        "random_state": 0,
        "scale": True,
        "algorithm": "lloyd",
        "max_iter": 300,
        "tol": 0.0001,
        "silhouette_sample_size": 300,
    },
    "results": [
        {
            "init": "random",
            "n_init": 4,
            "fit_time": 0.01,
            "inertia": 139.8,
            "n_iter": 5,
            "homogeneity": 0.66,
            "completeness": 0.66,
            "v_measure": 0.66,
            "ari": 0.62,
            "ami": 0.66,
            "silhouette": 0.46,
            "model_id": "ef" * 32,
            "warnings": [],
        }
    ],
    "plot_url": f"/v1/benchmarks/{ID}/plot.png",
    "versions": {"service": "0.1.0"},
}


PROBLEM = {
    "type": "urn:clusterbench:problem:invalid-request",
    "title": "Invalid request",
    "status": 422,
    "detail": "strategies[0]: unknown strategy 'nope'",
    "errors": [{"loc": ["strategies", 0], "msg": "unknown strategy 'nope'"}],
}


def json_response(status: int, body: Any, **headers: str) -> httpx.Response:
    content_type = "application/problem+json" if status >= 400 else "application/json"
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"content-type": content_type, **headers}
    )


def job_body(state: str, done: int, total: int = 3, **more: Any) -> dict[str, Any]:
    return {
        "id": "job1",
        "kind": "benchmark",
        "state": state,
        "progress": {"done": done, "total": total, "stage": f"fitting {done}/{total}"},
        "created_at": "2026-11-29T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "result_url": None,
        "error": None,
        **more,
    }


class Script:
    """A fake service: answers in order, and the requests it was sent."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer

    def client(self, **options: Any) -> Client:
        return Client("http://test", transport=httpx.MockTransport(self), **options)


def job_script() -> Script:
    return Script(
        json_response(202, job_body("queued", 0), Location="/v1/jobs/job1", **{"Retry-After": "0"}),
        json_response(200, job_body("running", 1), **{"Retry-After": "0"}),
        json_response(200, job_body("running", 1), **{"Retry-After": "0"}),
        json_response(200, job_body("running", 2), **{"Retry-After": "0"}),
        json_response(200, job_body("succeeded", 3, result_url=f"/v1/benchmarks/{ID}")),
        json_response(200, RESULT),
    )
