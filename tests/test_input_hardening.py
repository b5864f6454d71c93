"""Client input never gives a 500 (issue 9): huge JSON integers, values near 1e308, file
names that are mathtext, lax types. Every number returned is finite or the request refused."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from sklearn.datasets import make_blobs

from service import benchmark as bm
from service.api.body import SMALL_BODY_BYTES
from service.benchmark import ResolvedBenchmark
from service.datasets import DatasetStore
from service.engine import build_entry
from service.errors import InvalidDataError
from service.plotting import PanelSpec, figure_size_px, render_boundaries
from service.store import ResultStore
from tests.conftest import make_settings, serve
from tests.helpers import png_size
from tests.reference import assert_matches, seed_scores

# Python converts at most 4,300 digits from a string to an int (sys.int_info).
HUGE = "1" + "0" * 4400
HUGE_X = [[1e308, -1e308], [-1e308, 1e308], [1e308, 1e308], [-1e308, -1e308], [0.0, 1.0]]


def problem(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert "Traceback" not in response.text
    return body


async def post_json(client: httpx.AsyncClient, url: str, raw: bytes) -> httpx.Response:
    return await client.post(url, content=raw, headers={"content-type": "application/json"})


async def random_model(client: httpx.AsyncClient, dataset: str = "iris") -> str:
    response = await client.post(
        "/v1/benchmarks", json={"dataset": dataset, "strategies": ["random"]}
    )
    assert response.status_code == 200, response.text
    model_id: str = response.json()["results"][0]["model_id"]
    return model_id


# -- integers past Python's conversion limit ------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ('{"n_clusters": %s}', ["n_clusters"], "4401 digits"),
        ('{"random_state": -%s}', ["random_state"], "4401 digits"),
        ('{"strategies": [{"init": "random", "n_init": %s}]}', "n_init", "4401 digits"),
        ('{"X": [[0.5, 1], [2, %s], [3, 4]], "n_clusters": 2}', ["X", 1, 1], "4401 digits"),
        ('{"X": [[0.5, 1], [2, 3]], "y": [1, %s]}', ["y", 1], "4401 digits"),
        ("%s", [], "4401 digits"),
    ],
)
async def test_a_huge_integer_in_a_benchmark_body_is_a_422_naming_it(
    client: httpx.AsyncClient, body: str, loc: Any, words: str
) -> None:
    # Check that an integer of 4,401 digits is a 422 naming where it is, not a 500.
    found = problem(await post_json(client, "/v1/benchmarks", (body % HUGE).encode()))
    assert words in found["detail"]
    locs = [error["loc"] for error in found["errors"]]
    if isinstance(loc, str):
        assert any(loc in map(str, where) for where in locs), locs
    else:
        assert loc in locs, locs


@pytest.mark.anyio
async def test_a_huge_integer_in_a_large_body_is_a_422(client: httpx.AsyncClient) -> None:
    # Check the same in a body past SMALL_BODY_BYTES, which a data-lane worker decodes.
    rows = [[0.25, 0.5]] * (SMALL_BODY_BYTES // 10)
    raw = orjson.dumps({"X": rows})[:-1] + b', "n_clusters": ' + HUGE.encode() + b"}"
    assert len(raw) > SMALL_BODY_BYTES
    found = problem(await post_json(client, "/v1/benchmarks", raw))
    assert found["errors"][0]["loc"] == ["n_clusters"]
    assert "4401 digits" in found["detail"]


@pytest.mark.anyio
async def test_a_huge_integer_in_a_predict_body_is_a_422(client: httpx.AsyncClient) -> None:
    # Check that predict's body names the cell holding the huge integer.
    model_id = await random_model(client)
    raw = b'{"X": [[1, 2, 3, 4], [5, ' + HUGE.encode() + b", 7, 8]]}"
    found = problem(await post_json(client, f"/v1/models/{model_id}/predict", raw))
    assert found["errors"][0]["loc"] == ["X", 1, 1]
    assert "4401 digits" in found["detail"]


# -- values whose squares overflow --------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("init", ["k-means++", "random", "pca"])
async def test_data_near_float_max_is_refused(
    client: httpx.AsyncClient, scale: bool, init: str
) -> None:
    # Check that values near 1e308 are a 422 naming the value and the bound, with and
    # without the scaler, for every strategy (before: 500, or 200 with inertia null).
    found = problem(
        await client.post(
            "/v1/benchmarks",
            json={"X": HUGE_X, "n_clusters": 2, "scale": scale, "strategies": [init]},
        )
    )
    assert found["type"] == "urn:clusterbench:problem:invalid-data"
    assert found["errors"][0]["loc"] == ["X", 0, 0]
    bound = bm.magnitude_bound(10, np.float64)
    assert f"at most {bound:.3g} in absolute value" in found["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize("scale", [True, False])
async def test_data_at_the_bound_is_finite_and_equals_sklearn(
    client: httpx.AsyncClient, scale: bool
) -> None:
    # Check that data just inside the bound gives finite numbers equal to scikit-learn's,
    # and a plot, with every strategy.
    X, y = make_blobs(n_samples=40, centers=2, n_features=3, random_state=5)
    X = X / np.abs(X).max() * bm.magnitude_bound(X.size, np.float64)
    response = await client.post(
        "/v1/benchmarks", json={"X": X.tolist(), "y": y.tolist(), "scale": scale}
    )
    assert response.status_code == 200, response.text
    for result in response.json()["results"]:
        assert np.isfinite(result["inertia"])
        assert_matches(result, seed_scores(X, y, result["init"], n_clusters=2, scale=scale))
    plot = await client.get(response.json()["plot_url"])
    assert plot.status_code == 200


@pytest.mark.anyio
async def test_float32_data_has_its_own_bound(client: httpx.AsyncClient) -> None:
    # Check that float32 data is bounded for float32's range: 1e20 squared overflows it
    # (before: 200 with inertia null).
    X = np.array([[1e20, -1e20], [-1e20, 1e20], [1e20, 1e20], [0.0, 1.0]], dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, X)
    upload = await client.post(
        "/v1/datasets", content=buffer.getvalue(), headers={"content-type": "application/x-npy"}
    )
    assert upload.status_code in (200, 201), upload.text
    found = problem(
        await client.post(
            "/v1/benchmarks",
            json={"dataset": upload.json()["id"], "n_clusters": 2, "scale": False},
        )
    )
    assert "float32" in found["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize("dataset", ["iris", "wine"])
async def test_predict_refuses_samples_whose_distances_overflow(
    client: httpx.AsyncClient, dataset: str
) -> None:
    # Check that predict answers 422 for samples too far out, not `distances: [null]`.
    model_id = await random_model(client, dataset)
    n_features = (await client.get(f"/v1/models/{model_id}")).json()["n_features"]
    X = [[1.0] * n_features, [1e308] * n_features]
    found = problem(await client.post(f"/v1/models/{model_id}/predict", json={"X": X}))
    assert found["errors"][0]["loc"][:2] == ["X", 1]


def test_run_benchmark_and_the_plot_refuse_huge_data() -> None:
    # Check the domain functions themselves, as the plot's worker calls them.
    X = np.array(HUGE_X)
    params = bm.BenchmarkParams(dataset="x", n_clusters=2, strategies=(bm.Strategy("random", 1),))
    with pytest.raises(InvalidDataError, match=r"X\[0\]\[0\] is 1e\+308"):
        bm.run_benchmark(X, None, params)
    with pytest.raises(InvalidDataError, match=r"X\[0\]\[0\] is 1e\+308"):
        render_boundaries(
            X, [PanelSpec("random", 1)], n_clusters=2, random_state=0, dataset_name="huge"
        )


def test_a_non_finite_result_is_refused_not_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    # Check the last guard: were the bound missed, a non-finite inertia is an error.
    monkeypatch.setattr(bm.kernel, "check_magnitude", lambda X: None)
    params = bm.BenchmarkParams(
        dataset="x", n_clusters=2, strategies=(bm.Strategy("random", 1),), scale=False
    )
    with pytest.raises(InvalidDataError, match="non-finite"):
        bm.run_benchmark(np.array(HUGE_X), None, params)


@pytest.mark.anyio
async def test_the_plot_of_a_benchmark_stored_with_huge_data_is_a_422(tmp_path: Path) -> None:
    # Check the plot route on a benchmark stored before the bound existed: a 422, not a 500.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    info, _ = DatasetStore(data_dir / "datasets").put(
        np.array(HUGE_X), None, name="huge", format="json"
    )
    params = bm.BenchmarkParams(
        dataset=info.id, n_clusters=2, strategies=(bm.Strategy("random", 1),), scale=False
    )
    outcomes = bm.run_benchmark(np.array([[0.0, 1], [1, 0], [5, 5], [6, 5], [5, 6]]), None, params)
    job = ResolvedBenchmark(id=bm.benchmark_id(params), dataset=info, params=params)
    store = ResultStore(data_dir / "cache.sqlite3", max_bytes=1 << 30, memory_bytes=0)
    store.put(build_entry(job, outcomes))
    store.close()
    async with serve(make_settings(data_dir, workers=1)) as client:
        found = problem(await client.get(f"/v1/benchmarks/{job.id}/plot.png"))
    assert found["errors"][0]["loc"] == ["X", 0, 0]


# -- client text in the plot -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["$\\foo$.csv", "a_b^c$", "$$", "\\", "$x$" * 200, "\u6570\u636e $\\frac{$.csv"]
)
def test_the_plot_draws_any_dataset_name_as_plain_text(name: str) -> None:
    # Check that mathtext, TeX-breaking and glyph-less names draw, as text, without error.
    X, _ = make_blobs(n_samples=30, centers=2, n_features=2, random_state=0)
    png = render_boundaries(
        X, [PanelSpec("random", 1)], n_clusters=2, random_state=0, dataset_name=name
    )
    assert png_size(png) == figure_size_px(1)


@pytest.mark.anyio
async def test_the_plot_of_an_upload_named_like_mathtext(client: httpx.AsyncClient) -> None:
    # Check the plot route for a CSV uploaded by multipart as `$\foo$.csv` (before: 500).
    X = np.random.default_rng(2718).normal(size=(12, 3)).round(6)
    csv = "f0,f1,f2\n" + "\n".join(",".join(map(repr, map(float, row))) for row in X) + "\n"
    upload = await client.post("/v1/datasets", files={"file": ("$\\foo$.csv", csv.encode())})
    assert upload.status_code in (200, 201), upload.text
    assert upload.json()["name"] == "$\\foo$.csv"
    response = await client.post(
        "/v1/benchmarks", json={"dataset": upload.json()["id"], "n_clusters": 2}
    )
    assert response.status_code == 200, response.text
    plot = await client.get(response.json()["plot_url"])
    assert plot.status_code == 200, plot.text
    assert png_size(plot.content) == figure_size_px(3)


# -- strict types ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"n_clusters": "2"}, ["n_clusters"]),
        ({"n_clusters": 2.0}, ["n_clusters"]),
        ({"n_clusters": True}, ["n_clusters"]),
        ({"scale": "yes"}, ["scale"]),
        ({"scale": 1}, ["scale"]),
        ({"random_state": 1.0}, ["random_state"]),
        ({"max_iter": "300"}, ["max_iter"]),
        ({"tol": "0.001"}, ["tol"]),
        ({"tol": False}, ["tol"]),
        ({"silhouette_sample_size": "100"}, ["silhouette_sample_size"]),
        ({"silhouette_sample_size": 2**63}, ["silhouette_sample_size"]),
        (
            {"strategies": [{"init": "random", "n_init": "3"}]},
            ["strategies", 0, "n_init"],
        ),
        (
            {"strategies": [{"init": "random", "n_init": 3.0}]},
            ["strategies", 0, "n_init"],
        ),
    ],
)
async def test_lax_types_are_refused(
    client: httpx.AsyncClient, patch: dict[str, Any], loc: list[Any]
) -> None:
    # Check that a value of the wrong JSON type is a 422 naming the field, not coerced.
    found = problem(await client.post("/v1/benchmarks", json={"dataset": "iris", **patch}))
    assert loc in [error["loc"] for error in found["errors"]]


@pytest.mark.anyio
async def test_tol_zero_negative_zero_and_integer_zero_are_one_benchmark(
    client: httpx.AsyncClient,
) -> None:
    # Check that tol 0, 0.0 and -0.0 (all valid numbers) are the same benchmark id.
    ids = set()
    for tol in (b"0", b"0.0", b"-0.0", b"-0"):
        raw = b'{"dataset": "iris", "strategies": ["random"], "tol": ' + tol + b"}"
        response = await post_json(client, "/v1/benchmarks", raw)
        assert response.status_code == 200, response.text
        assert response.json()["params"]["tol"] == 0.0
        ids.add(response.json()["id"])
    assert len(ids) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("X", [[["1", 2, 3, 4]], [[True, 2, 3, 4]], "[[1, 2, 3, 4]]"])
async def test_predict_is_strict_too(client: httpx.AsyncClient, X: Any) -> None:
    # Check that predict refuses strings and booleans for numbers, naming where.
    model_id = await random_model(client)
    found = problem(await client.post(f"/v1/models/{model_id}/predict", json={"X": X}))
    assert found["errors"][0]["loc"][0] == "X"
