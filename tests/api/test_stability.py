"""POST /v1/stability and GET /v1/stability/{id} over HTTP, JSON and text."""

from __future__ import annotations

import html
from typing import Any

import httpx
import numpy as np
import pytest

from service import stability
from service.datasets import load_builtin
from service.schemas import StrategyStability
from tests.helpers import report_page
from tests.reference import family_scores

pytestmark = pytest.mark.anyio


async def test_stability_round_trip(client: httpx.AsyncClient) -> None:
    # Check the JSON against scikit-learn per seed, the cache, GET by id, and the ± table.
    body = {"dataset": "wine", "seeds": [1, 2, 3], "strategies": ["random"]}
    first = await client.post("/v1/stability", json=body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["params"]["seeds"] == [1, 2, 3]
    (result,) = data["results"]
    X, y = load_builtin("wine")
    inertias = [
        family_scores(X, y, "random", n_clusters=3, random_state=s)["inertia"] for s in (1, 2, 3)
    ]
    np.testing.assert_allclose(result["inertia"]["mean"], np.mean(inertias), rtol=1e-9)
    np.testing.assert_allclose(result["inertia"]["std"], np.std(inertias), rtol=1e-9, atol=1e-12)
    assert 0 <= result["seed_ari"]["min"] <= result["seed_ari"]["mean"] <= 1
    assert data["score_space"] == "clustered"
    silhouettes = [
        family_scores(
            X, y, "random", n_clusters=3, random_state=s, score_space="clustered", sample_state=0
        )["silhouette"]
        for s in (1, 2, 3)
    ]
    np.testing.assert_allclose(result["silhouette"]["mean"], np.mean(silhouettes), rtol=1e-9)
    again = await client.post("/v1/stability", json={**body, "seeds": [1, 2, 3]})
    assert again.headers["x-cache"] == "hit"
    assert again.json()["cached"] is True
    got = await client.get(f"/v1/stability/{data['id']}")
    assert got.status_code == 200
    assert got.json()["results"] == data["results"]
    text = await client.get(f"/v1/stability/{data['id']}", headers={"accept": "text/plain"})
    assert text.headers["content-type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert lines[0] == "3 seed(s): random_state in [1, 2, 3]"
    assert lines[3].split("\t")[0].strip() == "random"
    assert "±" in lines[3]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"seeds": 0}, "seeds must be between 1 and 100"),
        ({"seeds": 101}, "seeds must be between 1 and 100"),
        ({"seeds": list(range(101))}, "seeds has 101 values"),
        ({"seeds": [1, 1]}, "seeds lists a seed twice"),
        ({"seeds": []}, "seeds is empty"),
        ({"seeds": 3, "random_state": 4}, "takes `seeds`, not `random_state`"),
        ({"estimator": "bisecting", "strategies": ["pca"]}, "does not take strategy 'pca'"),
        ({"X": [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]}, "n_clusters is required"),
    ],
)
async def test_bad_stability_requests(
    client: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    # Check that each bad request is a 422 problem saying what and where.
    response = await client.post("/v1/stability", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"], response.json()["detail"]


async def test_unknown_stability_run_is_404(client: httpx.AsyncClient) -> None:
    # Check that an id nobody made is a 404 problem.
    missing = await client.get("/v1/stability/" + "0" * 64)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_stability_leaves_out_a_default_pca_that_cannot_run(
    client: httpx.AsyncClient,
) -> None:
    # Check that a stability run naming no strategies leaves pca out where it cannot run
    # (n_clusters 5 > iris' 4 features), with a warning, instead of a 422.
    response = await client.post("/v1/stability", json={"dataset": "iris", "n_clusters": 5})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [r["init"] for r in data["results"]] == ["k-means++", "random"]
    assert data["params"]["left_out"] == ["pca"]
    assert data["warnings"] == [
        "strategy 'pca' takes n_clusters=5 principal components, but the data has only "
        "min(n_samples, n_features)=4; left out of the default strategies"
    ]


async def test_stability_report_and_text_name_the_space_and_warnings(
    client: httpx.AsyncClient,
) -> None:
    # Check that a stability run has a self-contained report page (its table as the text
    # answer's cells, where the scores were measured, its warnings) and that the text
    # answer ends with the score space and the warnings.
    body = {"dataset": "iris", "seeds": 2, "n_clusters": 5}  # pca left out: a warning
    made = await client.post("/v1/stability", json=body)
    assert made.status_code == 200, made.text
    data = made.json()
    assert data["warnings"]
    text = await client.get(f"/v1/stability/{data['id']}", headers={"accept": "text/plain"})
    assert text.text.splitlines()[-len(data["warnings"]) - 1 :] == [
        "silhouette, Davies-Bouldin and Calinski-Harabasz measured in the clustered space",
        *(f"warning: {w}" for w in data["warnings"]),
    ]
    page = report_page(await client.get(f"/v1/stability/{data['id']}/report"))
    assert "Seed stability on the iris dataset" in page
    for r in data["results"]:
        row = "".join(
            f"<td>{html.escape(c)}</td>"
            for c in stability.row_cells(StrategyStability.model_validate(r))
        )
        assert row in page
    assert "in the space KMeans clustered" in page
    for warning in data["warnings"]:
        assert html.escape(warning) in page
    assert (await client.get(f"/v1/stability/{'0' * 64}/report")).status_code == 404
