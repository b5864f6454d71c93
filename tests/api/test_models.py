"""GET /v1/models/{id} and POST /v1/models/{id}/predict against scikit-learn's pipeline."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.datasets import load_builtin
from tests.helpers import model_ids

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("init", ["k-means++", "random", "pca"])
async def test_model_and_predict_match_the_pipeline(client: httpx.AsyncClient, init: str) -> None:
    # Check the model's centres and scaler, and that predict equals pipeline.predict with
    # distances equal to KMeans.transform, on digits.
    X, _ = load_builtin("digits")
    model_id = (await model_ids(client, {}))[init]
    pca_init = PCA(n_components=10).fit(X).components_
    kmeans = (
        KMeans(n_clusters=10, init=pca_init, n_init=1)
        if init == "pca"
        else KMeans(n_clusters=10, init=init, n_init=4, random_state=0)
    )
    pipeline = make_pipeline(StandardScaler(), kmeans).fit(X)

    response = await client.get(f"/v1/models/{model_id}")
    assert response.status_code == 200
    assert response.headers["etag"] == f'"{model_id}"'
    model = response.json()
    assert model["model_id"] == model_id
    assert model["init"] == init
    assert (model["n_clusters"], model["n_features"]) == (10, 64)
    scaler = pipeline[0]
    np.testing.assert_allclose(model["scaler"]["mean"], scaler.mean_)
    np.testing.assert_allclose(model["scaler"]["scale"], scaler.scale_)
    np.testing.assert_allclose(
        model["cluster_centers"], scaler.inverse_transform(kmeans.cluster_centers_), atol=1e-9
    )
    np.testing.assert_allclose(model["inertia"], kmeans.inertia_, rtol=1e-9)
    assert model["n_iter"] == kmeans.n_iter_

    queried = X[::7] + np.random.default_rng(0).normal(scale=0.5, size=X[::7].shape)
    predicted = await client.post(f"/v1/models/{model_id}/predict", json={"X": queried.tolist()})
    assert predicted.status_code == 200
    body = predicted.json()
    np.testing.assert_array_equal(body["labels"], pipeline.predict(queried))
    np.testing.assert_allclose(body["distances"], pipeline.transform(queried).min(axis=1))

    not_modified = await client.get(
        f"/v1/models/{model_id}", headers={"if-none-match": f'"{model_id}"'}
    )
    assert not_modified.status_code == 304


async def test_unscaled_model(client: httpx.AsyncClient) -> None:
    # Check that with scale=false the scaler is null and predict equals KMeans.predict.
    X, _ = load_builtin("wine")
    model_id = (
        await model_ids(client, {"dataset": "wine", "scale": False, "strategies": ["random"]})
    )["random"]
    kmeans = KMeans(n_clusters=3, init="random", n_init=4, random_state=0).fit(X)
    model = (await client.get(f"/v1/models/{model_id}")).json()
    assert model["scaler"] is None
    np.testing.assert_allclose(model["cluster_centers"], kmeans.cluster_centers_)
    body = (await client.post(f"/v1/models/{model_id}/predict", json={"X": X.tolist()})).json()
    np.testing.assert_array_equal(body["labels"], kmeans.predict(X))
    np.testing.assert_allclose(body["distances"], kmeans.transform(X).min(axis=1))


async def test_model_errors(client: httpx.AsyncClient) -> None:
    # Check 404 for an unknown model, 422 for a malformed id, the wrong number of
    # features, and bad samples.
    unknown = await client.get(f"/v1/models/{'c' * 64}")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    predict_unknown = await client.post(f"/v1/models/{'c' * 64}/predict", json={"X": [[1.0]]})
    assert predict_unknown.status_code == 404
    assert (await client.get("/v1/models/not-an-id")).status_code == 422

    model_id = (await model_ids(client, {"dataset": "iris", "strategies": ["k-means++"]}))[
        "k-means++"
    ]
    url = f"/v1/models/{model_id}/predict"
    cases = [
        ({"X": [[1.0, 2.0, 3.0]]}, "X has 3 features but the model was fitted on 4"),
        ({"X": [[1.0, 2.0, 3.0, 4.0], [1.0]]}, "ragged"),
        ({"X": []}, "X"),
        ({"X": [[1.0, 2.0, "a", 4.0]]}, "X[0][2]"),
        ({}, "X"),
    ]
    for body, words in cases:
        response = await client.post(url, json=body)
        assert response.status_code == 422, body
        assert words in response.json()["detail"], response.json()
    nan = await client.post(
        url, content=b'{"X": [[1, 2, NaN, 4]]}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422
    assert "X[0][2]" in nan.json()["detail"]
    one = await client.post(url, json={"X": [[5.1, 3.5, 1.4, 0.2]]})
    assert one.status_code == 200
    assert len(one.json()["labels"]) == 1
