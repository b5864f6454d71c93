"""POST /v1/sweeps, GET /v1/sweeps/{id} and its plot over HTTP."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import httpx
import pytest
from sklearn.datasets import make_blobs

from service import sweeps
from service.datasets import load_builtin
from service.schemas import SweepPoint, SweepResult
from tests.helpers import png_size, report_page
from tests.reference import assert_all_match, family_scores

pytestmark = pytest.mark.anyio


async def test_sweep_round_trip(client: httpx.AsyncClient) -> None:
    # Check the JSON shape, every number against scikit-learn, the cache (hit, same id
    # for the same question written another way), GET by id, ETag/304 and the plot.
    body = {"dataset": "iris", "k": {"min": 2, "max": 5}, "strategies": ["k-means++", "random"]}
    first = await client.post("/v1/sweeps", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    data = first.json()
    assert data["cached"] is False
    assert data["params"]["k"] == [2, 3, 4, 5]
    assert set(data["recommended_k"]) == {
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
        "elbow",
    }
    assert set(data["recommended_k_by_strategy"]) == {"k-means++", "random"}
    assert data["score_space"] == "clustered"
    assert data["warnings"] == []
    X, y = load_builtin("iris")
    for r in data["results"]:
        expected = family_scores(X, y, r["init"], n_clusters=r["k"], score_space="clustered")
        assert_all_match(r, expected)
    again = await client.post(
        "/v1/sweeps", json={**body, "k": [5, 4, 3, 2, 3], "scale": True, "random_state": 0}
    )
    assert again.headers["x-cache"] == "hit"
    assert again.json()["id"] == data["id"]
    assert again.json()["cached"] is True
    assert again.json()["results"] == data["results"]
    got = await client.get(f"/v1/sweeps/{data['id']}")
    assert got.status_code == 200
    assert got.json()["results"] == data["results"]
    etag = got.headers["etag"]
    assert (
        await client.get(f"/v1/sweeps/{data['id']}", headers={"if-none-match": etag})
    ).status_code == 304
    plot = await client.get(data["plot_url"])
    assert plot.status_code == 200
    assert plot.headers["content-type"] == "image/png"
    assert png_size(plot.content)[0] > png_size(plot.content)[1]
    assert (await client.get(data["plot_url"])).content == plot.content


async def test_default_sweep_on_unlabelled_inline_data(client: httpx.AsyncClient) -> None:
    # Check the defaults (k = 2..10, k-means++) and null label scores without labels.
    X, _ = make_blobs(n_samples=90, centers=3, n_features=2, random_state=0, cluster_std=0.4)
    response = await client.post("/v1/sweeps", json={"X": X.tolist()})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [r["k"] for r in data["results"]] == list(range(2, 11))
    assert {r["init"] for r in data["results"]} == {"k-means++"}
    assert all(r["ari"] is None for r in data["results"])
    assert data["recommended_k"]["silhouette"] == 3
    for r in data["results"]:
        expected = family_scores(X, None, "k-means++", n_clusters=r["k"], score_space="clustered")
        assert_all_match(r, expected)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"k": [1, 2]}, "k"),
        ({"k": {"min": 5, "max": 3}}, "k.max (3) is smaller than k.min (5)"),
        ({"k": {"min": 2, "max": 60}}, "k has 59 values; a sweep takes at most 50"),
        ({"k": []}, "k is empty"),
        ({"dataset": "iris", "k": [2, 150]}, "k=150 is too large for 150 samples"),
        ({"dataset": "iris", "k": [5, 6], "strategies": ["pca"]}, "at k=5: strategy 'pca'"),
        (
            {"strategies": [{"init": "custom", "centers": [[0.0] * 64] * 2}], "k": [2]},
            "cannot use strategy 'custom'",
        ),
        ({"estimator": "bisecting", "strategies": ["pca"], "k": [2]}, "does not take strategy"),
        ({"dataset": "nope"}, "unknown dataset"),
        ({"X": [[0, 1], [1, 0], [2, 2]], "dataset": "iris"}, "either `dataset` or inline `X`"),
    ],
)
async def test_bad_sweeps_are_clear_problems(
    client: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    # Check that each bad sweep is a 422 problem saying what and where.
    response = await client.post("/v1/sweeps", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"], response.json()["detail"]


async def test_a_sweep_skips_the_k_where_pca_cannot_run(client: httpx.AsyncClient) -> None:
    # Check that pca is skipped at the k past iris' 4 features, with a warning, where it
    # was a 422 for the whole sweep; its progress counts only the steps that run.
    body = {"dataset": "iris", "k": [3, 4, 5, 6], "strategies": ["pca", "k-means++"]}
    job = await client.post("/v1/sweeps", json=body, headers={"prefer": "respond-async"})
    assert job.status_code == 202, job.text
    assert job.json()["progress"]["total"] == 6
    response = await client.post("/v1/sweeps", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [(r["k"], r["init"]) for r in data["results"]] == [
        (3, "pca"), (3, "k-means++"), (4, "pca"), (4, "k-means++"), (5, "k-means++"),
        (6, "k-means++"),
    ]  # fmt: skip
    assert data["warnings"] == [
        "strategy 'pca' skipped at k=5, 6: it takes n_clusters=5 principal components, "
        "but the data has only min(n_samples, n_features)=4"
    ]


async def test_unknown_sweep_is_404(client: httpx.AsyncClient) -> None:
    # Check that an id nobody made is a 404 problem, and a malformed one a 422.
    missing = await client.get("/v1/sweeps/" + "0" * 64)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/sweeps/" + "0" * 64 + "/plot.png")).status_code == 404
    assert (await client.get("/v1/sweeps/../etc")).status_code in (404, 422)


@pytest.mark.server
@pytest.mark.anyio
async def test_sweeps_and_stability_are_their_tenants_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Check that B cannot read or plot A's sweep or read A's stability run (404 as if it
    # did not exist), nor sweep A's uploaded data, while A can.
    from tests.helpers import A, B, csv, start_tenants_server

    server = start_tenants_server(tmp_path_factory, "sweep-tenants")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            made = await http.post(
                "/v1/datasets?label_column=label",
                content=csv(40),
                headers={**A, "Content-Type": "text/csv"},
            )
            dataset_id = made.json()["id"]
            run = await http.post(
                "/v1/sweeps", json={"dataset": dataset_id, "k": [2, 3]}, headers=A
            )
            assert run.status_code == 200, run.text
            sweep = run.json()
            runs = await http.post(
                "/v1/stability", json={"dataset": dataset_id, "seeds": 2}, headers=A
            )
            assert runs.status_code == 200, runs.text
            paths = (
                f"/v1/sweeps/{sweep['id']}",
                sweep["plot_url"],
                f"/v1/stability/{runs.json()['id']}",
            )
            for path in paths:
                theirs = await http.get(path, headers=B)
                assert theirs.status_code == 404, (path, theirs.text)
                assert (await http.get(path, headers=A)).status_code == 200
            named = await http.post("/v1/sweeps", json={"dataset": dataset_id}, headers=B)
            assert named.status_code == 422
            assert "unknown dataset" in named.json()["detail"]
            assert (await http.post("/v1/sweeps", json={"k": [2]})).status_code == 401
    finally:
        server.stop()


async def test_a_large_inline_body_is_read_in_a_worker(client: httpx.AsyncClient) -> None:
    # Check that a body past the in-memory size (spilled to a file, decoded in a data
    # worker) gives the same sweep as the same data sent by upload.
    from service.api.body import SMALL_BODY_BYTES

    X, _ = make_blobs(n_samples=6000, centers=3, n_features=10, random_state=4)
    body = {"X": X.tolist(), "k": [2, 3], "silhouette_sample_size": 100}
    assert len(str(body)) > SMALL_BODY_BYTES
    inline = await client.post("/v1/sweeps", json=body)
    assert inline.status_code == 200, inline.text
    uploaded = await client.post("/v1/datasets", json={"X": X.tolist()})
    assert uploaded.status_code in (200, 201), uploaded.text
    named = await client.post(
        "/v1/sweeps",
        json={"dataset": uploaded.json()["id"], "k": [2, 3], "silhouette_sample_size": 100},
    )
    assert named.json()["id"] == inline.json()["id"]
    assert named.headers["x-cache"] == "hit"


async def test_sweep_text_and_report(client: httpx.AsyncClient) -> None:
    # Check that a sweep answers Accept: text/plain with its table (POST and GET), that
    # its report page holds each strategy's recommended k, the table, the plot (the same
    # bytes as plot.png) and nothing from elsewhere, and that text/html is not offered
    # as a representation of the sweep itself (406).
    body = {"dataset": "iris", "k": [2, 3, 4], "strategies": ["random", "k-means++"]}
    text = await client.post("/v1/sweeps", json=body, headers={"accept": "text/plain"})
    assert text.status_code == 200, text.text
    assert text.headers["content-type"].startswith("text/plain")
    data = (await client.post("/v1/sweeps", json=body)).json()
    assert text.text == sweeps.format_table(SweepResult.model_validate(data))
    assert data["recommended_k"] == data["recommended_k_by_strategy"]["random"]
    got = await client.get(f"/v1/sweeps/{data['id']}", headers={"accept": "text/plain"})
    assert got.text == text.text
    refused = await client.get(f"/v1/sweeps/{data['id']}", headers={"accept": "image/gif"})
    assert refused.status_code == 406
    page = report_page(await client.get(f"/v1/sweeps/{data['id']}/report"))
    assert "Choosing k on the iris dataset" in page
    for init, picks in data["recommended_k_by_strategy"].items():
        assert f"<td>{init}" in page
        assert f"<td>{picks['silhouette']}</td>" in page
    for r in data["results"]:
        cells = [
            f"<td>{html.escape(c)}</td>" for c in sweeps.row_cells(SweepPoint.model_validate(r))
        ]
        cells[1] = cells[1].replace("<td>", '<td class="text">')  # init: text, left
        row = "".join(cells)
        assert row in page
    found = re.search(r'<img[^>]* src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found is not None
    assert base64.b64decode(found.group(1)) == (await client.get(data["plot_url"])).content
    missing = await client.get(f"/v1/sweeps/{'0' * 64}/report")
    assert missing.status_code == 404
