"""Sparse data fitted end to end (API.md Part 3 "Sparse data"): every number equals
scikit-learn's pipeline called directly on the same CSR matrix (``StandardScaler(with_mean=
False)``, ``Normalizer``, ``PCA(svd_solver="arpack")`` starts), and the plot, the models,
sweeps and stability runs work on it without making it dense."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
import scipy.sparse
from sklearn import metrics
from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from service import blockwise
from tests.reference import assert_all_match

pytestmark = pytest.mark.anyio

TOPICS = [
    "kmeans cluster centroid inertia init",
    "python service http request json",
    "digits image pixel handwritten label",
    "sparse matrix csr tfidf text",
]


def corpus() -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """TF-IDF of a small text corpus: documents drawn from four topics' words."""
    rng = np.random.default_rng(3)
    docs, topics = [], []
    for i in range(160):
        topic = i % 4
        words = TOPICS[topic].split() + " ".join(TOPICS).split()
        picked = rng.choice(words, size=12, p=None)
        docs.append(" ".join([*picked, *TOPICS[topic].split()[: 1 + i % 3]]))
        topics.append(topic)
    return TfidfVectorizer().fit_transform(docs).tocsr(), np.array(topics)


X, Y = corpus()


def npz_bytes(matrix: scipy.sparse.csr_matrix) -> bytes:
    buffer = io.BytesIO()
    scipy.sparse.save_npz(buffer, matrix)
    return buffer.getvalue()


def libsvm_bytes(matrix: scipy.sparse.csr_matrix, y: np.ndarray) -> bytes:
    from sklearn.datasets import dump_svmlight_file

    buffer = io.BytesIO()
    dump_svmlight_file(matrix, y, buffer)
    return buffer.getvalue()


def expected_scores(
    init: str,
    *,
    n_clusters: int,
    scale: bool = True,
    normalize: bool = False,
    labelled: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """One strategy on X, written out with scikit-learn (scores on X as given; the label
    scores None when the upload carried no labels, as save_npz does not)."""
    steps: list[Any] = []
    if scale:
        steps.append(StandardScaler(with_mean=False))
    if normalize:
        steps.append(Normalizer())
    start: Any = init
    n_init = 4
    if init == "pca":
        start = PCA(n_components=n_clusters, svd_solver="arpack", random_state=0).fit(X).components_
        n_init = 1
    kmeans = KMeans(n_clusters=n_clusters, init=start, n_init=n_init, random_state=0, **kw)
    model = make_pipeline(*steps, kmeans).fit(X)
    labels = kmeans.labels_
    dense = X.toarray()  # the reference only: scikit-learn's scores take dense data
    label_scores = {
        "homogeneity": metrics.homogeneity_score(Y, labels),
        "completeness": metrics.completeness_score(Y, labels),
        "v_measure": metrics.v_measure_score(Y, labels),
        "ari": metrics.adjusted_rand_score(Y, labels),
        "ami": metrics.adjusted_mutual_info_score(Y, labels),
    }
    return {
        "inertia": kmeans.inertia_,
        "n_iter": kmeans.n_iter_,
        **{name: value if labelled else None for name, value in label_scores.items()},
        "silhouette": metrics.silhouette_score(X, labels, sample_size=300, random_state=0),
        "davies_bouldin": metrics.davies_bouldin_score(dense, labels),
        "calinski_harabasz": metrics.calinski_harabasz_score(dense, labels),
        "_model": model,
    }


async def upload(client: httpx.AsyncClient, content: bytes, media_type: str) -> str:
    response = await client.post(
        "/v1/datasets", content=content, headers={"content-type": media_type}
    )
    assert response.status_code in (200, 201), response.text  # 200: stored before
    assert response.json()["sparse"] is True
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("scale", "normalize"), [(True, False), (False, True), (True, True)], ids=str
)
async def test_benchmark_on_sparse_equals_the_pipeline(
    client: httpx.AsyncClient, scale: bool, normalize: bool
) -> None:
    # Check a benchmark of a save_npz upload: each strategy's numbers equal scikit-learn's
    # pipeline on the CSR matrix, and predict equals the pipeline's predict.
    dataset = await upload(client, npz_bytes(X), "application/x-scipy-sparse")
    body = {
        "dataset": dataset,
        "n_clusters": 4,
        "scale": scale,
        "normalize": "l2" if normalize else "none",
    }
    answer = await client.post("/v1/benchmarks", json=body)
    assert answer.status_code == 200, answer.text
    for result in answer.json()["results"]:
        expected = expected_scores(
            result["init"], n_clusters=4, scale=scale, normalize=normalize, labelled=False
        )
        model = expected.pop("_model")
        assert_all_match(result, expected)
        rows = X[:7].toarray().tolist()
        predicted = await client.post(f"/v1/models/{result['model_id']}/predict", json={"X": rows})
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["labels"] == model.predict(X[:7]).tolist()


@pytest.mark.parametrize("scale", [False, True], ids=["unscaled", "scaled"])
@pytest.mark.parametrize(
    ("estimator", "cls"), [("minibatch", MiniBatchKMeans), ("bisecting", BisectingKMeans)]
)
async def test_other_estimators_on_sparse_equal_scikit_learn(
    client: httpx.AsyncClient, estimator: str, cls: type, scale: bool
) -> None:
    # Check MiniBatchKMeans and BisectingKMeans on a stored sparse matrix, scaled and not,
    # against scikit-learn's pipeline. The stored arrays are memory maps, and
    # MiniBatchKMeans' Cython takes them as writable buffers: unscaled, it was a 500.
    dataset = await upload(client, npz_bytes(X), "application/x-scipy-sparse")
    body = {
        "dataset": dataset,
        "n_clusters": 4,
        "estimator": estimator,
        "scale": scale,
        "strategies": ["k-means++", "random"],
    }
    answer = await client.post("/v1/benchmarks", json=body)
    assert answer.status_code == 200, answer.text
    for result in answer.json()["results"]:
        kmeans = cls(n_clusters=4, init=result["init"], n_init=4, random_state=0)
        steps = [StandardScaler(with_mean=False)] if scale else []
        make_pipeline(*steps, kmeans).fit(X)
        assert result["inertia"] == pytest.approx(kmeans.inertia_, rel=1e-9)
        labels = kmeans.labels_
        assert result["ari"] is None  # save_npz carries no labels
        assert result["calinski_harabasz"] == pytest.approx(
            metrics.calinski_harabasz_score(X.toarray(), labels), rel=1e-9
        )


async def test_libsvm_upload_plot_profiles_and_anomalies(client: httpx.AsyncClient) -> None:
    # Check a libsvm upload (its targets the labels): the plot draws (TruncatedSVD), the
    # model's cluster profiles equal a dense group-by, anomalies answer, and the scores
    # equal the pipeline's.
    dataset = await upload(client, libsvm_bytes(X, Y), "text/x-libsvm")
    answer = await client.post(
        "/v1/benchmarks", json={"dataset": dataset, "strategies": ["k-means++"]}
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    expected = expected_scores("k-means++", n_clusters=4)
    model = expected.pop("_model")
    assert_all_match(result, expected)

    plot = await client.get(answer.json()["plot_url"])
    assert plot.status_code == 200, plot.text
    assert plot.content.startswith(b"\x89PNG")

    # The report says what was sent: the format, and the density of sparse data.
    report = await client.get(f"/v1/benchmarks/{answer.json()['id']}/report")
    assert report.status_code == 200, report.text
    assert report.headers["content-type"].startswith("text/html")
    assert "<td>libsvm</td>" in report.text
    density = X.nnz / (X.shape[0] * X.shape[1])
    assert f"<th>density</th><td>{density}</td>" in report.text

    page = await client.get(f"/v1/models/{result['model_id']}")
    assert page.status_code == 200, page.text
    labels = model[-1].labels_
    dense = X.toarray()
    clusters = page.json()["clusters"]
    for cluster in clusters:
        members = dense[labels == cluster["label"]]
        assert cluster["size"] == len(members)
        means = np.array(list(cluster["mean"].values()))
        np.testing.assert_allclose(means, members.mean(axis=0), rtol=1e-9, atol=1e-12)

    anomalies = await client.post(
        f"/v1/models/{result['model_id']}/anomalies",
        json={"X": dense[:5].tolist(), "contamination": 0.1},
    )
    assert anomalies.status_code == 200, anomalies.text
    distances = np.sqrt(
        ((model[:-1].transform(X[:5]).toarray() - model[-1].cluster_centers_[labels[:5]]) ** 2).sum(
            axis=1
        )
    )
    got = [row["distance"] for row in anomalies.json()["rows"]]
    np.testing.assert_allclose(got, distances, rtol=1e-6)

    # The exported model takes dense rows and labels them as the pipeline does.
    import onnxruntime

    exported = await client.get(f"/v1/models/{result['model_id']}/model.onnx")
    assert exported.status_code == 200, exported.text
    session = onnxruntime.InferenceSession(exported.content)
    inputs = {session.get_inputs()[0].name: dense.astype(np.float32)}
    onnx_labels = session.run(["label"], inputs)[0].ravel()
    assert onnx_labels.tolist() == model.predict(X).tolist()


async def test_sweep_and_stability_on_sparse(client: httpx.AsyncClient) -> None:
    # Check that a sweep and a stability run on sparse data answer with the pipeline's
    # inertia at each k and seed (scores in the clustered space, as for dense data).
    dataset = await upload(client, npz_bytes(X), "application/x-scipy-sparse")
    sweep = await client.post(
        "/v1/sweeps", json={"dataset": dataset, "k": [3, 4], "strategies": ["k-means++"]}
    )
    assert sweep.status_code == 200, sweep.text
    for page in ("plot.png", "report"):
        shown = await client.get(f"/v1/sweeps/{sweep.json()['id']}/{page}")
        assert shown.status_code == 200, shown.text
    for point in sweep.json()["results"]:
        kmeans = KMeans(n_clusters=point["k"], n_init=4, random_state=0)
        make_pipeline(StandardScaler(with_mean=False), kmeans).fit(X)
        assert point["inertia"] == pytest.approx(kmeans.inertia_, rel=1e-9)

    stability = await client.post(
        "/v1/stability",
        json={"dataset": dataset, "n_clusters": 4, "seeds": [0, 1], "strategies": ["random"]},
    )
    assert stability.status_code == 200, stability.text
    shown = await client.get(f"/v1/stability/{stability.json()['id']}/report")
    assert shown.status_code == 200, shown.text
    inertias = []
    for seed in (0, 1):
        kmeans = KMeans(n_clusters=4, init="random", n_init=4, random_state=seed)
        make_pipeline(StandardScaler(with_mean=False), kmeans).fit(X)
        inertias.append(kmeans.inertia_)
    summary = stability.json()["results"][0]["inertia"]
    assert summary["mean"] == pytest.approx(np.mean(inertias), rel=1e-9)


def test_sparse_statistics_equal_the_dense_ones() -> None:
    # Check the sparse branches of the block-wise statistics against the dense code on
    # the same matrix: profiles, distances to centres and the two internal scores.
    labels = np.random.default_rng(0).integers(0, 5, X.shape[0])
    dense = X.toarray()
    for got, want in zip(
        blockwise.profile_clusters(X, labels, 6),
        blockwise.profile_clusters(dense, labels, 6),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    centers = np.random.default_rng(1).standard_normal((5, X.shape[1]))
    np.testing.assert_allclose(
        blockwise.distances_to_centers(X, labels, centers),
        blockwise.distances_to_centers(dense, labels, centers),
        rtol=1e-9,
    )
    assert blockwise.calinski_harabasz_score(X, labels) == pytest.approx(
        metrics.calinski_harabasz_score(dense, labels), rel=1e-9
    )
    assert blockwise.davies_bouldin_score(X, labels) == pytest.approx(
        metrics.davies_bouldin_score(dense, labels), rel=1e-9
    )


async def test_pca_past_arpacks_reach_is_a_422(client: httpx.AsyncClient) -> None:
    # Check that pca on sparse data with as many clusters as features (ARPACK finds
    # fewer) is a 422 naming the limit, not a 500.
    small = scipy.sparse.random(40, 5, density=0.5, format="csr", random_state=2)
    dataset = await upload(client, npz_bytes(small), "application/x-scipy-sparse")
    answer = await client.post(
        "/v1/benchmarks", json={"dataset": dataset, "n_clusters": 5, "strategies": ["pca"]}
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "ARPACK" in answer.json()["detail"]


async def test_a_model_past_its_bound_is_a_422_before_any_work(client: httpx.AsyncClient) -> None:
    # Check that a few bytes of sparse data with a million columns cannot make models of
    # hundreds of MB: n_clusters x n_features past MAX_MODEL_VALUES is a 422 naming both,
    # for a benchmark, a sweep and a stability run, and nothing is computed or stored.
    from service.benchmark import MAX_MODEL_VALUES

    width = 1 << 20
    rows, cols = np.arange(20) % 10, np.arange(20) * 50_000
    wide = scipy.sparse.csr_matrix((np.ones(20), (rows, cols)), shape=(10, width))
    dataset = await upload(client, npz_bytes(wide), "application/x-scipy-sparse")
    n_clusters = MAX_MODEL_VALUES // width + 1
    for path, body in (
        ("/v1/benchmarks", {"dataset": dataset, "n_clusters": n_clusters}),
        ("/v1/sweeps", {"dataset": dataset, "k": [2, n_clusters]}),
        ("/v1/stability", {"dataset": dataset, "n_clusters": n_clusters, "seeds": [0, 1]}),
    ):
        answer = await client.post(path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert f"n_features={width}" in answer.json()["detail"]
    listed = await client.get("/v1/benchmarks")
    assert listed.status_code == 200, listed.text
    assert all(b["dataset"]["id"] != dataset for b in listed.json()["benchmarks"])
