"""Models that leave the service: ONNX export, anomalies and cluster profiles, against
onnxruntime, numpy and pandas called directly."""

from __future__ import annotations

import html
from dataclasses import replace

import httpx
import numpy as np
import onnxruntime
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from service import benchmark as bm
from service.datasets import load_builtin
from service.errors import InvalidParameterError
from service.report import profile_table
from service.schemas import Anomalies
from service.store import model_from_bytes, model_to_bytes
from tests.helpers import model_ids

pytestmark = pytest.mark.anyio


async def one_model(client: httpx.AsyncClient, **request: object) -> str:
    return (await model_ids(client, {"strategies": ["k-means++"], **request}))["k-means++"]


@pytest.mark.parametrize("estimator", ["kmeans", "minibatch"])
@pytest.mark.parametrize("scale", [True, False])
async def test_onnx_export_scores_as_predict(
    client: httpx.AsyncClient, estimator: str, scale: bool
) -> None:
    # Check that the exported model, run by onnxruntime on 1,000 rows, gives /predict's
    # labels and its distances to 1e-4 relative.
    X, _ = load_builtin("digits")
    model_id = await one_model(client, estimator=estimator, scale=scale)
    page = (await client.get(f"/v1/models/{model_id}")).json()
    assert page["estimator"] == estimator
    response = await client.get(page["onnx_url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{model_id}.onnx"'

    rows = X[:1000] + np.random.default_rng(1).normal(scale=0.5, size=(1000, X.shape[1]))
    session = onnxruntime.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    labels, scores = session.run(["label", "scores"], {"X": rows.astype(np.float32)})
    predicted = (
        await client.post(f"/v1/models/{model_id}/predict", json={"X": rows.tolist()})
    ).json()
    np.testing.assert_array_equal(labels, predicted["labels"])
    np.testing.assert_allclose(
        scores[np.arange(len(rows)), labels], predicted["distances"], rtol=1e-4
    )

    again = await client.get(page["onnx_url"])
    assert again.content == response.content
    unchanged = await client.get(
        page["onnx_url"], headers={"if-none-match": response.headers["etag"]}
    )
    assert unchanged.status_code == 304


async def test_onnx_export_names_the_step_it_cannot_convert(client: httpx.AsyncClient) -> None:
    # Check that a BisectingKMeans model (no skl2onnx converter) is a 422 naming the step,
    # and an unknown model a 404.
    model_id = await one_model(client, dataset="iris", estimator="bisecting")
    response = await client.get(f"/v1/models/{model_id}/model.onnx")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "'bisectingkmeans' (BisectingKMeans)" in response.json()["detail"]
    assert (await client.get(f"/v1/models/{'c' * 64}/model.onnx")).status_code == 404


def own_distances(X: np.ndarray, scale: bool) -> tuple[np.ndarray, KMeans]:
    """The training rows' distances to their own centre, from scikit-learn directly."""
    kmeans = KMeans(n_clusters=10, init="k-means++", n_init=4, random_state=0)
    scaler = StandardScaler().fit(X) if scale else None
    Z = X if scaler is None else scaler.transform(X)
    kmeans.fit(Z)
    return np.linalg.norm(Z - kmeans.cluster_centers_[kmeans.labels_], axis=1), kmeans


@pytest.mark.parametrize("contamination", [0.01, 0.1, 0.37])
async def test_anomalies_threshold_and_share(
    client: httpx.AsyncClient, contamination: float
) -> None:
    # Check that the threshold is numpy.quantile of the training distances, that the
    # share flagged on the training rows is the contamination within one row, and that
    # planted outliers are flagged.
    X, _ = load_builtin("digits")
    model_id = await one_model(client)
    distances, _ = own_distances(X, scale=True)

    url = f"/v1/models/{model_id}/anomalies"
    body = (await client.post(url, json={"X": X.tolist(), "contamination": contamination})).json()
    np.testing.assert_allclose(
        body["threshold"], np.quantile(distances, 1 - contamination), rtol=1e-12
    )
    flagged = sum(row["is_anomaly"] for row in body["rows"])
    assert abs(flagged - contamination * len(X)) <= 1
    predicted = (await client.post(f"/v1/models/{model_id}/predict", json={"X": X.tolist()})).json()
    assert [row["label"] for row in body["rows"]] == predicted["labels"]
    assert [row["distance"] for row in body["rows"]] == predicted["distances"]

    inliers = X[:20]
    outliers = X[20:25] + 25.0  # far beyond any digit's 0..16 pixel range
    tested = (
        await client.post(
            url, json={"X": np.vstack([inliers, outliers]).tolist(), "contamination": 0.01}
        )
    ).json()
    assert [row["is_anomaly"] for row in tested["rows"][20:]] == [True] * 5


async def test_anomalies_answer_is_its_models_json(client: httpx.AsyncClient) -> None:
    # Check that the anomalies answer, written by orjson for speed, is byte for byte the
    # Anomalies model's own JSON, floats included (an exponent, a tiny distance, a zero).
    model_id = await one_model(client, dataset="iris")
    X = [[5.1, 3.5, 1.4, 0.2], [1e17, 0.0, 0.0, 0.0], [5.9, 3.0, 5.1, 1.8], [0.0, 0.0, 0.0, 1e-300]]
    response = await client.post(f"/v1/models/{model_id}/anomalies", json={"X": X})
    assert response.status_code == 200
    answer = Anomalies.model_validate_json(response.content)
    assert any("e+" in str(row.distance) for row in answer.rows)
    assert response.content == answer.model_dump_json().encode()


async def test_anomalies_refuses_bad_requests(client: httpx.AsyncClient) -> None:
    # Check 422 for a contamination outside (0, 0.5), for a wrong row, and 404 for an
    # unknown model.
    model_id = await one_model(client, dataset="iris")
    url = f"/v1/models/{model_id}/anomalies"
    for contamination in (0, 0.5, -1, "a lot"):
        body = {"X": [[1, 2, 3, 4]], "contamination": contamination}
        response = await client.post(url, json=body)
        assert response.status_code == 422, contamination
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"] == ["contamination"]
    wrong = await client.post(url, json={"X": [[1, 2, 3]]})
    assert wrong.status_code == 422
    assert "X has 3 features" in wrong.json()["detail"]
    unknown = await client.post(f"/v1/models/{'c' * 64}/anomalies", json={"X": [[1]]})
    assert unknown.status_code == 404


@pytest.mark.parametrize("scale", [True, False])
async def test_cluster_profiles_equal_pandas_group_by(
    client: httpx.AsyncClient, scale: bool
) -> None:
    # Check that each cluster's size, mean and standard deviation are pandas' group-by
    # on the data in its own units with the fit's labels, by column name.
    X, _ = load_builtin("digits")
    model_id = await one_model(client, scale=scale)
    _, kmeans = own_distances(X, scale=scale)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    groups = frame.groupby(kmeans.labels_)

    clusters = (await client.get(f"/v1/models/{model_id}")).json()["clusters"]
    assert [c["label"] for c in clusters] == list(range(10))
    assert [c["size"] for c in clusters] == groups.size().tolist()
    for name, stat in (("mean", groups.mean()), ("std", groups.std())):
        served = pd.DataFrame([c[name] for c in clusters], dtype=float)
        pd.testing.assert_frame_equal(served, stat.reset_index(drop=True), rtol=1e-9)


async def test_report_and_profiles_by_column_name(client: httpx.AsyncClient) -> None:
    # Check that an uploaded CSV's column names key the profiles, and that the report
    # shows each strategy's profile table, its names escaped.
    csv = "a<b,width\n" + "".join(f"{i % 7},{(i * 3) % 11}\n" for i in range(60))
    upload = await client.post(
        "/v1/datasets", content=csv.encode(), headers={"content-type": "text/csv"}
    )
    assert upload.status_code in (200, 201), upload.text
    benchmark = (
        await client.post(
            "/v1/benchmarks",
            json={"dataset": upload.json()["id"], "n_clusters": 3, "strategies": ["random"]},
        )
    ).json()
    model_id = benchmark["results"][0]["model_id"]
    clusters = (await client.get(f"/v1/models/{model_id}")).json()["clusters"]
    assert list(clusters[0]["mean"]) == ["a<b", "width"]
    assert sum(c["size"] for c in clusters) == 60

    page = (await client.get(f"/v1/benchmarks/{benchmark['id']}/report")).text
    assert "Cluster profiles" in page
    header, *rows = profile_table(clusters)
    assert "".join(f"<th>{html.escape(cell)}</th>" for cell in header) in page
    for row in rows:
        assert "".join(f"<td>{html.escape(cell)}</td>" for cell in row) in page
    assert "<td>a<b</td>" not in page


def test_stored_model_keeps_profiles_and_distances() -> None:
    # Check that a fitted model's estimator, names, profiles and training distances survive
    # the store's .npz bytes exactly, and that a model stored without them (before they were
    # kept) reads back with no profiles and a 422 for anomalies.
    X, _ = load_builtin("iris")
    params = bm.BenchmarkParams(
        dataset="iris", n_clusters=3, strategies=(bm.Strategy("random", 4),), estimator="minibatch"
    )
    model = replace(
        bm.fit_strategy(X, None, params.strategies[0], params)[0].model,
        feature_names=("a", "b", "c", "d"),
    )
    back = model_from_bytes(model_to_bytes(model))
    assert (back.estimator, back.n_train) == ("minibatch", 150)
    assert back.feature_names == model.feature_names
    assert back.profiles() == model.profiles()
    assert back.threshold(0.05) == model.threshold(0.05)

    old = replace(
        model, cluster_sizes=None, cluster_means=None, cluster_stds=None, distance_tail=None
    )
    before = model_from_bytes(model_to_bytes(old))
    assert before.profiles() is None
    with pytest.raises(InvalidParameterError, match="earlier version"):
        before.threshold(0.05)
