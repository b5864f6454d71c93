"""service.client: scripted answers for its retry and job logic, then a real server."""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import itertools
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from service.client import (
    AsyncClient,
    Client,
    ClusterbenchError,
    Job,
    media_type_of,
    retry_after,
)
from service.formats import EXTENSIONS, MEDIA_TYPES
from service.process import ServiceProcess, free_port
from service.schemas import BenchmarkResult
from tests.scripted import ID, PROBLEM, RESULT, Script, job_body, job_script, json_response


def test_a_503_is_retried_after_its_retry_after() -> None:
    # Check that 503s with Retry-After are sent again until the answer comes.
    script = Script(
        json_response(
            503, {**PROBLEM, "status": 503, "title": "Compute pool busy"}, **{"Retry-After": "0"}
        ),
        json_response(503, {**PROBLEM, "status": 503}, **{"Retry-After": "0"}),
        json_response(200, RESULT),
    )
    with script.client() as client:
        result = client.get_benchmark(ID)
    assert result == BenchmarkResult.model_validate(RESULT)
    assert [r.url.path for r in script.requests] == [f"/v1/benchmarks/{ID}"] * 3


def test_retries_are_bounded_in_number_and_in_time() -> None:
    # Check that a service busy for ever is reported as its problem, after max_retries
    # retries, and at once when its Retry-After is past the client's max_retry_wait.
    busy = json_response(503, {**PROBLEM, "status": 503, "title": "Busy"}, **{"Retry-After": "0"})
    script = Script(busy)
    with script.client(max_retries=3) as client, pytest.raises(ClusterbenchError) as caught:
        client.get_benchmark(ID)
    assert len(script.requests) == 4
    assert (caught.value.status, caught.value.title, caught.value.retry_after) == (503, "Busy", 0)

    later = Script(json_response(503, {**PROBLEM, "status": 503}, **{"Retry-After": "3600"}))
    t0 = time.monotonic()
    with later.client(max_retry_wait=60) as client, pytest.raises(ClusterbenchError) as caught:
        client.get_benchmark(ID)
    assert time.monotonic() - t0 < 1
    assert len(later.requests) == 1
    assert caught.value.retry_after == 3600


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    # Check both forms of Retry-After (RFC 9110), and that nonsense is ignored.
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert retry_after(answer("7")) == 7
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < (retry_after(answer(in_a_minute)) or 0) <= 60
    assert retry_after(answer("Mon, 01 Jan 2001 00:00:00 GMT")) == 0
    assert retry_after(answer("soon")) is None
    assert retry_after(httpx.Response(503)) is None


def test_a_problem_is_raised_with_its_fields() -> None:
    # Check that a problem+json answer becomes ClusterbenchError with its fields, and that
    # an answer that is not the service's own (a proxy's page) still says what came.
    with (
        Script(json_response(422, PROBLEM)).client() as client,
        pytest.raises(ClusterbenchError) as caught,
    ):
        client.benchmark(strategies=["nope"])
    error = caught.value
    assert (error.status, error.title, error.detail, error.type, error.errors) == (
        422,
        PROBLEM["title"],
        PROBLEM["detail"],
        PROBLEM["type"],
        PROBLEM["errors"],
    )
    assert PROBLEM["detail"] in str(error)

    page = httpx.Response(502, text="<html><body>Bad gateway</body></html>")
    with Script(page).client() as client, pytest.raises(ClusterbenchError) as caught:
        client.datasets()
    assert (caught.value.status, caught.value.title) == (502, "Bad Gateway")
    assert "Bad gateway" in caught.value.detail


def test_request_carries_fields_key_and_prefer() -> None:
    # Check the request a benchmark sends: only the fields given (NumPy arrays as lists),
    # the API key as a bearer token, and Prefer: respond-async.
    script = Script(json_response(200, RESULT))
    with script.client(api_key="s3cret") as client:
        client.benchmark(
            "iris",
            X=np.array([[0.0, 1.0], [2.0, 3.0]]),
            strategies=["random", {"init": "k-means++", "n_init": 2}],
            silhouette_sample_size=None,
        )
    (request,) = script.requests
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["prefer"] == "respond-async"
    assert orjson.loads(request.content) == {
        "dataset": "iris",
        "X": [[0.0, 1.0], [2.0, 3.0]],
        "strategies": ["random", {"init": "k-means++", "n_init": 2}],
        "silhouette_sample_size": None,
    }


def test_benchmark_follows_a_scripted_job() -> None:
    # Check the job path against a scripted service: 202, polls honouring Retry-After,
    # progress reported at each change only, then the result fetched from result_url.
    script = job_script()
    seen: list[tuple[str, int]] = []
    with script.client() as client:
        result = client.benchmark(progress=lambda job: seen.append((job.state, job.progress.done)))
    assert result == BenchmarkResult.model_validate(RESULT)
    assert seen == [("queued", 0), ("running", 1), ("running", 2), ("succeeded", 3)]
    assert [r.url.path for r in script.requests] == [
        "/v1/benchmarks",
        *["/v1/jobs/job1"] * 4,
        f"/v1/benchmarks/{ID}",
    ]


@pytest.mark.anyio
async def test_async_client_follows_a_scripted_job_with_a_coroutine_callback() -> None:
    # Check the same with AsyncClient, whose progress callback may be a coroutine function.
    script = job_script()
    seen: list[int] = []

    async def progress(job: Job) -> None:
        seen.append(job.progress.done)

    async with AsyncClient("http://test", transport=httpx.MockTransport(script)) as client:
        result = await client.benchmark(progress=progress)
    assert result.id == ID
    assert seen == [0, 1, 2, 3]


def test_a_failed_job_raises_its_error_and_wait_false_returns_the_job() -> None:
    # Check that a job that failed raises its problem; that wait=False gives the job at
    # once; and that a job past wait_timeout is reported, not waited on for ever.
    failed = Script(
        json_response(202, job_body("queued", 0), **{"Retry-After": "0"}),
        json_response(
            200, job_body("failed", 1, error={**PROBLEM, "status": 504, "title": "Too long"})
        ),
    )
    with failed.client() as client, pytest.raises(ClusterbenchError) as caught:
        client.benchmark()
    assert (caught.value.status, caught.value.title) == (504, "Too long")
    assert failed.requests[1].url.path == "/v1/jobs/job1"  # no Location: the job's id

    with Script(json_response(202, job_body("queued", 0))).client() as client:
        job = client.benchmark(wait=False)
    assert isinstance(job, Job)
    assert job.state == "queued"
    assert Job.model_validate({"id": "j", "state": "queued", "progress": None}).progress.done == 0

    stuck = Script(json_response(202, job_body("running", 1)))
    with stuck.client() as client, pytest.raises(ClusterbenchError) as caught:
        client.benchmark(wait_timeout=0.5)
    assert "still running after 0.5 s" in caught.value.detail


def test_an_unreachable_service_is_one_clear_error() -> None:
    # Check that no server on the port gives ClusterbenchError without a status, saying
    # where it looked and how to start the service.
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(ClusterbenchError) as caught:
        client.datasets()
    assert caught.value.status is None
    assert caught.value.detail == (
        f"cannot reach {url}: is the service running? start it with `clusterbench serve`"
    )


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_the_methods_read_as_each_client_s_own(cls: type[Client] | type[AsyncClient]) -> None:
    # Check that what tools read of a method (type hints, signature, a wrong call's
    # TypeError) is the method's, not the machinery's that writes both clients' once.
    assert typing.get_type_hints(cls.get_job) == {"job_id": str, "return": Job}
    assert typing.get_type_hints(cls.benchmark)["return"] == BenchmarkResult | Job
    assert list(inspect.signature(cls.plot).parameters) == ["self", "result_id", "init", "kind"]
    assert inspect.iscoroutinefunction(cls.get_job) is (cls is AsyncClient)
    client: Any = cls("http://127.0.0.1:9")

    def wrong_call() -> None:
        call = client.benchmark("digits", "iris")
        if inspect.iscoroutine(call):  # an async method binds its arguments when awaited
            call.send(None)

    with pytest.raises(TypeError, match=r"\.benchmark\(\) takes from 1 to 2 positional"):
        wrong_call()
    if cls is Client:
        client.close()
    else:
        asyncio.run(client.aclose())


def test_upload_media_types_agree_with_the_service(tmp_path: Path) -> None:
    # Check that every extension the service reads is sent with a media type it reads as
    # the same format, and that an unknown one is refused before any request.
    for extension, fmt in EXTENSIONS.items():
        assert MEDIA_TYPES[media_type_of(f"data{extension.upper()}")] == fmt
    with pytest.raises(ValueError, match=r"'data\.txt'"):
        media_type_of("data.txt")
    script = Script(json_response(200, {}))
    (tmp_path / "data.txt").write_text("1,2\n")
    with script.client() as client, pytest.raises(ValueError, match="media_type"):
        client.upload(tmp_path / "data.txt")
    with script.client() as client, pytest.raises(ValueError, match="media_type"):
        client.upload(b"1,2\n")
    assert script.requests == []


# -- against a real server ---------------------------------------------------------------


def _raw(server: ServiceProcess, path: str, **options: Any) -> httpx.Response:
    response = httpx.request(options.pop("method", "GET"), f"{server.url}{path}", **options)
    assert response.status_code < 300, response.text
    return response


@pytest.mark.server
def test_client_numbers_equal_the_servers_json(server: ServiceProcess) -> None:
    # Check that every field of the client's answer is the service's JSON, as sent.
    with Client(server.url) as client:
        result = client.benchmark("iris", strategies=["k-means++", "random"], random_state=3)
        again = client.get_benchmark(result.id)
    raw = _raw(server, f"/v1/benchmarks/{result.id}", timeout=30).json()
    for answer in (result, again):
        # exclude_unset: the service leaves optional keys out (a strategy without centres).
        dumped = answer.model_dump(mode="json", exclude={"results"}, exclude_unset=True)
        assert {**dumped, "cached": True} == {key: raw[key] for key in dumped}
        for ours, theirs in zip(answer.results, raw["results"], strict=True):
            assert ours.model_dump(mode="json") == {k: theirs[k] for k in type(ours).model_fields}
    assert again.cached
    assert [r.init for r in result.results] == ["k-means++", "random"]


@pytest.mark.server
def test_table_is_the_services_text_plain(server: ServiceProcess) -> None:
    # Check that table() is the service's text/plain representation, character for character.
    with Client(server.url) as client:
        result = client.benchmark("wine", random_state=1)
        table = client.table(result.id)
    plain = _raw(server, f"/v1/benchmarks/{result.id}", headers={"Accept": "text/plain"})
    assert table == plain.text
    assert table.splitlines()[1].startswith("init\t\ttime\tinertia")


@pytest.mark.server
def test_upload_a_csv_file_then_benchmark_it(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that a CSV file uploads (with its label column), is listed, and benchmarks.
    rng = np.random.default_rng(5)
    X = np.vstack([rng.normal(0, 1, (30, 3)), rng.normal(6, 1, (30, 3))]).round(3)
    path = tmp_path / "blobs.csv"
    lines = ["a,b,c,label", *(f"{r[0]},{r[1]},{r[2]},{'xy'[i // 30]}" for i, r in enumerate(X))]
    path.write_text("\n".join(lines) + "\n")
    with Client(server.url) as client:
        info = client.upload(path, label_column="label")
        assert (info.n_samples, info.n_features, info.has_labels, info.format) == (
            60,
            3,
            True,
            "csv",
        )
        assert client.upload(path.read_bytes(), "text/csv", label_column="label") == info
        assert info in client.datasets()
        assert client.dataset(info.id) == info
        result = client.benchmark(info, strategies=["k-means++"])
    assert result.dataset.id == info.id
    assert result.n_clusters == 2
    assert result.results[0].ari == 1.0


@pytest.mark.server
def test_plot_bytes_are_the_services_png(server: ServiceProcess) -> None:
    # Check that plot() gives the PNG that GET plot.png gives, whole and for one panel.
    with Client(server.url) as client:
        result = client.benchmark("iris", strategies=["k-means++", "random"], random_state=3)
        whole = client.plot(result.id)
        panel = client.plot(result.id, init="random")
    assert whole.startswith(b"\x89PNG\r\n\x1a\n")
    assert whole == _raw(server, result.plot_url, timeout=60).content
    assert panel == _raw(server, result.plot_url, params={"init": "random"}, timeout=60).content
    assert panel != whole


@pytest.mark.server
def test_model_and_predict_equal_the_servers(server: ServiceProcess) -> None:
    # Check model() and predict() against the service's JSON.
    X = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    with Client(server.url) as client:
        result = client.benchmark("iris", strategies=["k-means++", "random"], random_state=3)
        model_id = result.results[0].model_id
        model = client.model(model_id)
        prediction = client.predict(model_id, np.array(X))
    assert model.model_dump(mode="json") == _raw(server, f"/v1/models/{model_id}").json()
    raw = _raw(server, f"/v1/models/{model_id}/predict", method="POST", json={"X": X})
    assert prediction.model_dump(mode="json") == raw.json()


@pytest.mark.server
@pytest.mark.anyio
async def test_async_client_gives_the_same_answers(server: ServiceProcess) -> None:
    # Check AsyncClient against the sync one on the same server, for each operation.
    payload = b"a,b\n0,0\n0,1\n5,5\n5,6\n"
    with Client(server.url) as sync:
        expected = sync.benchmark("iris", strategies=["k-means++", "random"], random_state=3)
        table = sync.table(expected.id)
        png = sync.plot(expected.id, init="k-means++")
        info = sync.upload(payload, "text/csv")
    async with AsyncClient(server.url) as client:
        result = await client.benchmark("iris", strategies=["k-means++", "random"], random_state=3)
        assert result == expected.model_copy(update={"cached": True})
        assert await client.get_benchmark(expected.id) == result
        assert await client.table(expected.id) == table
        assert await client.plot(expected.id, init="k-means++") == png
        assert await client.upload(payload, "text/csv") == info
        assert info in await client.datasets()
        model_id = result.results[0].model_id
        assert (await client.model(model_id)).model_id == model_id
        prediction = await client.predict(model_id, [[5.1, 3.5, 1.4, 0.2]])
        assert len(prediction.labels) == 1


@pytest.mark.server
def test_service_problems_are_raised_with_their_fields(server: ServiceProcess) -> None:
    # Check a real 404 and a real 422 from the service.
    with Client(server.url) as client:
        with pytest.raises(ClusterbenchError) as missing:
            client.get_benchmark("0" * 64)
        with pytest.raises(ClusterbenchError) as invalid:
            client.benchmark("iris", strategies=["nope"])
    assert missing.value.status == 404
    assert "0" * 64 in missing.value.detail
    raw = httpx.post(f"{server.url}/v1/benchmarks", json={"strategies": ["nope"]}).json()
    assert invalid.value.status == 422
    assert (invalid.value.detail, invalid.value.errors) == (raw["detail"], raw["errors"])


class RecordingTransport(httpx.HTTPTransport):
    """httpx's transport, noting when each request went and what came back."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[float, float, int, httpx.Headers]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = super().handle_request(request)
        self.log.append((sent, time.monotonic(), response.status_code, response.headers))
        return response


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[ServiceProcess]:
    """One worker and no queue: a second computation while one runs is refused with 503."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir, CLUSTERBENCH_WORKERS="1", CLUSTERBENCH_QUEUE_SIZE="0") as s:
        yield s


@pytest.mark.server
def test_a_real_503_with_retry_after_is_retried(busy_server: ServiceProcess) -> None:
    # Check that while the only worker computes, the client's request for work of its own
    # is refused with 503 + Retry-After, waits as asked, and gets its answer once the
    # worker is free. A plot is that work: it is drawn in the pool on first request, and,
    # unlike a benchmark asked with Prefer: respond-async, it is never queued as a job.
    with Client(busy_server.url) as client:
        result = client.benchmark("iris", strategies=["random"], random_state=2)
    long = {"strategies": [{"init": "random", "n_init": 300}], "tol": 0.0, "random_state": 9}
    done: dict[str, httpx.Response] = {}
    worker = threading.Thread(
        target=lambda: done.update(
            r=httpx.post(f"{busy_server.url}/v1/benchmarks", json=long, timeout=120)
        )
    )
    worker.start()
    try:
        _wait_for(
            lambda: (
                "clusterbench_compute_pending 1.0" in httpx.get(f"{busy_server.url}/metrics").text
            ),
            60,
            "the long benchmark to take the worker",
        )
        transport = RecordingTransport()
        with Client(busy_server.url, transport=transport, max_retries=100) as client:
            png = client.plot(result.id)
    finally:
        worker.join()
    assert done["r"].status_code == 200
    assert png == httpx.get(f"{busy_server.url}{result.plot_url}").content
    statuses = [status for _, _, status, _ in transport.log]
    assert statuses[0] == 503
    assert statuses[-1] == 200
    assert set(statuses[:-1]) == {503}
    for (_, answered, _, headers), (sent, *_) in itertools.pairwise(transport.log):
        assert sent - answered >= float(headers["retry-after"]) - 0.01


@pytest.mark.server
def test_benchmark_follows_a_job_with_progress(server: ServiceProcess) -> None:
    # Check, against a real service with jobs (API.md part 2), that benchmark() follows
    # the job: progress reported with done never decreasing, ending at total on success.
    # A service without jobs answers 200 at once and reports no progress: this fails then.
    seen: list[Job] = []
    with Client(server.url) as client:
        result = client.benchmark(
            "digits",
            strategies=["k-means++", "random", "pca"],
            random_state=20261129,
            progress=seen.append,
        )
        assert result.results == client.get_benchmark(result.id).results
    assert seen, "no progress reported: the service did not run the benchmark as a job"
    done = [job.progress.done for job in seen]
    assert done == sorted(done)
    assert seen[-1].state == "succeeded"
    assert seen[-1].progress.total is not None
    assert done[-1] == seen[-1].progress.total


@pytest.mark.server
def test_upload_an_array_or_a_dataframe_named(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that the client uploads a NumPy array and a pandas DataFrame (it refused both),
    # the DataFrame with its column names, and names an upload after its file.
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(21)
    X = rng.normal(size=(30, 3))
    frame = pd.DataFrame(X + 100, columns=["height", "width", "depth"])
    path = tmp_path / "boxes.csv"
    frame.assign(depth=frame.depth + 1).to_csv(path, index=False)
    with Client(server.url) as client:
        array = client.upload(X, name="gaussian")
        assert (array.n_samples, array.n_features, array.format) == (30, 3, "npy")
        assert array.name == "gaussian"
        table = client.upload(frame, name="boxes")
        assert table.feature_names == ["height", "width", "depth"]
        assert (table.format, table.name) == ("parquet", "boxes")
        named = client.upload(path)
        assert (named.name, named.format) == ("boxes.csv", "csv")
        result = client.benchmark(array, n_clusters=2, strategies=["random"])
        assert result.dataset.id == array.id
        with pytest.raises(TypeError, match="a benchmark takes no field k"):
            client.benchmark("iris", k=3)


@pytest.mark.server
def test_upload_sparse_categorical_and_weighted(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that the client uploads a scipy.sparse matrix (CSC too) as sparse data, the
    # same matrix as a libsvm file by its .svm extension, and a CSV with a column forced
    # categorical and a weight column (it had neither parameter).
    import scipy.sparse
    from sklearn.datasets import dump_svmlight_file

    lil = scipy.sparse.random(30, 50, density=0.1, format="lil", random_state=5)
    lil[0, 0] = lil[1, 49] = 1.0  # libsvm's width: its largest index, zero-based with a 0
    X = lil.tocsr()
    path = tmp_path / "words.svm"
    dump_svmlight_file(X, np.zeros(30), str(path), zero_based=True)
    frame = "size,code,w\n" + "".join(f"{i},{i % 3},{1 + i % 2}\n" for i in range(12))
    with Client(server.url) as client:
        sparse = client.upload(X.tocsc(), name="words")
        assert (sparse.format, sparse.sparse, sparse.n_features) == ("scipy-sparse", True, 50)
        assert sparse.density == pytest.approx(X.nnz / (30 * 50))
        libsvm = client.upload(path)
        assert (libsvm.format, libsvm.sparse, libsvm.has_labels) == ("libsvm", True, True)
        table = client.upload(frame.encode(), "text/csv", categorical=["code"], weight_column="w")
    kinds = {c.name: c.kind for c in table.columns or []}
    assert kinds == {"size": "numeric", "code": "categorical", "w": "weight"}


@pytest.mark.parametrize("state", ["queued", "running", "succeeded", "failed", "cancelled"])
def test_the_client_reads_a_job_with_the_api_s_own_model(state: str) -> None:
    # Check that the client's Job is the API's response model, with its one enum of
    # states, and that a job record as the API answers it reads into that model and is
    # written back as the same JSON (times to the millisecond, in UTC).
    from datetime import datetime

    from service import client, schemas
    from service.errors import ComputeCancelledError
    from service.jobs.records import JobRecord, problem_of

    assert (client.Job, client.JobProgress) == (schemas.Job, schemas.JobProgress)
    finished = schemas.JobState(state).finished
    record = JobRecord(
        id="j" * 64,
        kind="sweep",
        key="k" * 64,
        request={},
        state=schemas.JobState(state),
        done=2,
        total=3,
        stage="storing",
        created=1_800_000_000.1234,
        owner="1-a@here",
        started=None if state == "queued" else 1_800_000_001.5,
        finished=1_800_000_002.0 if finished else None,
        error=problem_of(ComputeCancelledError("gone")) if state == "cancelled" else None,
    )
    body = orjson.loads(record.public().model_dump_json())
    job = Job.model_validate_json(orjson.dumps(body))
    assert job.state == state
    assert job.finished == (state in ("succeeded", "failed", "cancelled"))
    assert isinstance(job.created_at, datetime)
    assert job.created_at.timestamp() == pytest.approx(1_800_000_000.123)
    assert orjson.loads(job.model_dump_json()) == body
