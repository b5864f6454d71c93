"""Real tables: missing cells, categorical columns and weights, end to end, against
scikit-learn's ColumnTransformer pipeline called directly (API.md Part 3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, OneHotEncoder, StandardScaler

from tests.conftest import make_settings, serve

pytestmark = pytest.mark.anyio

RTOL = 1e-9
rng = np.random.default_rng(7)
N = 120
ISLANDS = np.array(["Biscoe", "Dream", "Torgersen"])
SPECIES = rng.integers(0, 3, N)
# A penguins-like table: numbers and words interleaved, cells missing in both kinds.
PENGUINS = pd.DataFrame(
    {
        "bill_length": np.round(38 + 6 * SPECIES + rng.normal(0, 1.5, N), 1),
        "island": ISLANDS[(SPECIES + rng.integers(0, 2, N)) % 3],
        "flipper": np.round(185 + 12 * SPECIES + rng.normal(0, 4, N), 0),
        "sex": np.where(rng.random(N) < 0.5, "male", "female"),
        "mass": np.round(3500 + 700 * SPECIES + rng.normal(0, 200, N), 0),
        "species": np.array(["Adelie", "Chinstrap", "Gentoo"])[SPECIES],
    }
)
GAPS = {"bill_length": [3, 50], "island": [7], "sex": [11, 12, 90], "mass": [50]}
for column, rows in GAPS.items():
    PENGUINS[column] = PENGUINS[column].astype(object)
    PENGUINS.loc[rows, column] = None
NUMERIC = ["bill_length", "flipper", "mass"]
CATEGORICAL = ["island", "sex"]
FEATURES = ["bill_length", "island", "flipper", "sex", "mass"]


def penguins_csv() -> bytes:
    return PENGUINS.to_csv(index=False).encode()


def column_transformer(*, impute: bool) -> ColumnTransformer:
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if not impute:
        return ColumnTransformer([("num", "passthrough", NUMERIC), ("cat", onehot, CATEGORICAL)])
    return ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="mean"), NUMERIC),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), onehot), CATEGORICAL),
        ]
    )


def features(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[FEATURES].copy()
    for name in NUMERIC:
        out[name] = out[name].astype(float)
    for name in CATEGORICAL:
        out[name] = out[name].astype(object).where(out[name].notna(), np.nan)
    return out


def direct(
    frame: pd.DataFrame,
    *,
    impute: bool,
    normalize: bool = False,
    weight: Any = None,
    random_state: int = 0,
) -> Pipeline:
    steps: list[Any] = [column_transformer(impute=impute), StandardScaler()]
    if normalize:
        steps.append(Normalizer())
    steps.append(KMeans(n_clusters=3, init="k-means++", n_init=4, random_state=random_state))
    pipeline = make_pipeline(*steps)
    pipeline.fit(features(frame), **({} if weight is None else {"kmeans__sample_weight": weight}))
    return pipeline


async def upload(client: httpx.AsyncClient, body: bytes, media: str, **params: str) -> Any:
    response = await client.post(
        "/v1/datasets",
        content=body,
        headers={"content-type": media},
        params={"label_column": "species", **params},
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


async def benchmark(client: httpx.AsyncClient, dataset: str, **fields: Any) -> Any:
    response = await client.post(
        "/v1/benchmarks",
        json={"dataset": dataset, "n_clusters": 3, "strategies": ["k-means++"], **fields},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_csv_with_gaps_and_words_equals_the_column_transformer_pipeline(
    client: httpx.AsyncClient,
) -> None:
    # Check that a CSV with empty cells and string columns is stored with its columns'
    # kinds and gaps, refused with missing="error", and with "impute" gives every number
    # of make_pipeline(ColumnTransformer, StandardScaler, KMeans) called directly.
    info = await upload(client, penguins_csv(), "text/csv")
    assert info["columns"] == [
        {"name": "bill_length", "kind": "numeric", "missing": 2},
        {"name": "island", "kind": "categorical", "missing": 1},
        {"name": "flipper", "kind": "numeric", "missing": 0},
        {"name": "sex", "kind": "categorical", "missing": 3},
        {"name": "mass", "kind": "numeric", "missing": 1},
        {"name": "species", "kind": "label", "missing": 0},
    ]
    refused = await client.post("/v1/benchmarks", json={"dataset": info["id"], "n_clusters": 3})
    assert refused.status_code == 422
    assert "7 missing cell(s)" in refused.json()["detail"]
    assert '"missing": "impute"' in refused.json()["detail"]

    body = await benchmark(client, info["id"], missing="impute")
    pipeline = direct(PENGUINS, impute=True)
    [result] = body["results"]
    assert body["params"]["missing"] == "impute"
    assert_allclose(result["inertia"], pipeline[-1].inertia_, rtol=RTOL)
    given = pipeline[0].transform(features(PENGUINS))
    expected = silhouette_score(given, pipeline[-1].labels_, sample_size=300, random_state=0)
    assert_allclose(result["silhouette"], expected, rtol=RTOL)

    # Raw rows: strings, nulls, an island never seen in training, and a keyed object.
    raw = [
        [40.1, "Dream", 190.0, "male", 3700.0],
        [None, "Atlantis", 210.0, None, 5000.0],
        {"bill_length": 50.0, "island": None, "flipper": 200.0, "sex": "female", "mass": None},
    ]
    predicted = await client.post(f"/v1/models/{result['model_id']}/predict", json={"X": raw})
    assert predicted.status_code == 200, predicted.text
    frame = pd.DataFrame(
        [r if isinstance(r, list) else [r[n] for n in FEATURES] for r in raw], columns=FEATURES
    )
    assert predicted.json()["labels"] == pipeline.predict(features(frame)).tolist()
    distances = pipeline.transform(features(frame)).min(axis=1)
    assert_allclose(predicted.json()["distances"], distances, rtol=RTOL)

    model = (await client.get(f"/v1/models/{result['model_id']}")).json()
    assert model["n_features"] == 3 + 3 + 2  # numbers, islands, sexes


async def test_drop_leaves_out_rows_with_a_gap(client: httpx.AsyncClient) -> None:
    # Check that missing="drop" fits the complete rows only, as the pipeline does on them,
    # and says how many rows it used; a model without imputation refuses a null.
    info = await upload(client, penguins_csv(), "text/csv")
    body = await benchmark(client, info["id"], missing="drop")
    complete = PENGUINS[PENGUINS[FEATURES].notna().all(axis=1)].reset_index(drop=True)
    assert body["dataset"]["n_samples"] == len(complete) == N - 6
    pipeline = direct(complete, impute=False)
    assert_allclose(body["results"][0]["inertia"], pipeline[-1].inertia_, rtol=RTOL)
    model_id = body["results"][0]["model_id"]
    row = [None, "Dream", 190.0, "male", 3700.0]
    refused = await client.post(f"/v1/models/{model_id}/predict", json={"X": [row]})
    assert refused.status_code == 422
    assert "bill_length" in refused.json()["detail"]


async def test_weighted_parquet_with_nulls_and_dictionaries(client: httpx.AsyncClient) -> None:
    # Check that a Parquet file with nulls and dictionary columns, and a weight column,
    # gives the numbers of the pipeline fitted with kmeans__sample_weight, normalized (l2).
    weights = np.round(rng.uniform(0.5, 3.0, N), 2)
    table = pa.table(
        {
            **{
                name: pa.array(
                    PENGUINS[name].tolist(),
                    type=pa.dictionary(pa.int32(), pa.string())
                    if name in CATEGORICAL
                    else pa.float64(),
                )
                for name in FEATURES
            },
            "species": pa.array(PENGUINS["species"].tolist()),
            "w": pa.array(weights),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    info = await upload(
        client, buffer.getvalue(), "application/vnd.apache.parquet", weight_column="w"
    )
    assert info["columns"][-1] == {"name": "w", "kind": "weight", "missing": 0}
    body = await benchmark(client, info["id"], missing="impute", normalize="l2")
    pipeline = direct(PENGUINS, impute=True, normalize=True, weight=weights)
    assert_allclose(body["results"][0]["inertia"], pipeline[-1].inertia_, rtol=RTOL)
    again = await benchmark(client, info["id"], missing="impute", normalize="l2")
    assert again["id"] == body["id"]
    assert again["cached"]
    # The model says it normalizes: its centres alone do not assign a sample.
    model = await client.get(f"/v1/models/{body['results'][0]['model_id']}")
    assert model.json()["normalize"] == "l2"

    sweep = await client.post(
        "/v1/sweeps",
        json={"dataset": info["id"], "k": [3], "missing": "impute", "normalize": "l2"},
    )
    assert sweep.status_code == 200, sweep.text
    assert_allclose(sweep.json()["results"][0]["inertia"], pipeline[-1].inertia_, rtol=RTOL)


@pytest.mark.parametrize(
    ("body", "params", "expected"),
    [
        (b"a,b\n1,x\n2,3\n4,y\n", {}, "mixes numbers and text"),
        (b"a,b,w\n1,2,1\n3,4,-1\n5,6,2\n", {"weight_column": "w"}, "weights must be finite"),
        (b"a,b,w\n1,2,1\n3,4,\n5,6,2\n", {"weight_column": "w"}, "missing weight"),
    ],
)
async def test_bad_tables_are_refused_and_not_stored(
    client: httpx.AsyncClient, body: bytes, params: dict[str, str], expected: str
) -> None:
    # Check that a mixed column, and a negative or missing weight, are each a 422 naming
    # the cell, and that nothing is stored.
    before = (await client.get("/v1/datasets")).json()["datasets"]
    response = await client.post(
        "/v1/datasets", content=body, headers={"content-type": "text/csv"}, params=params
    )
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert "row 1" in response.json()["detail"]
    assert (await client.get("/v1/datasets")).json()["datasets"] == before


@pytest.mark.parametrize(
    ("body", "media", "missing", "kinds"),
    [
        (
            b"a,b,c\n1,,x\n3,NaN,\n5,NA,y\n",
            "text/csv",
            [0, 3, 1],
            ["numeric"] * 2 + ["categorical"],
        ),
        (b"a,b\ntrue,1\nfalse,2\n", "text/csv", [0, 0], ["categorical", "numeric"]),
        (
            b'{"X": [[1, "a"], [null, "b"], [2, null]]}',
            "application/json",
            [1, 1],
            ["numeric", "categorical"],
        ),
    ],
)
async def test_missing_cells_and_categories_are_kept(
    client: httpx.AsyncClient, body: bytes, media: str, missing: list[int], kinds: list[str]
) -> None:
    # Check that empty, NA and NaN cells and nulls are stored as missing, and booleans
    # and words as categories, in CSV and JSON.
    response = await client.post("/v1/datasets", content=body, headers={"content-type": media})
    assert response.status_code == 201, response.text
    columns = response.json()["columns"]
    assert [c["missing"] for c in columns] == missing
    assert [c["kind"] for c in columns] == kinds


@pytest.mark.parametrize("missing", ["impute", "drop"])
async def test_onnx_export_of_a_table_model_labels_raw_rows_as_predict(
    client: httpx.AsyncClient, missing: str
) -> None:
    # Check that a table model exports to ONNX (ColumnTransformer, imputers, one-hot
    # encoder, scaler, KMeans) with one input per column, and that onnxruntime labels raw
    # rows (strings, an unseen category, and, when imputed, missing cells) as /predict.
    import onnxruntime

    info = await upload(client, penguins_csv(), "text/csv")
    body = await benchmark(client, info["id"], missing=missing)
    model_id = body["results"][0]["model_id"]
    exported = await client.get(f"/v1/models/{model_id}/model.onnx")
    assert exported.status_code == 200, exported.text
    session = onnxruntime.InferenceSession(exported.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == FEATURES

    frame = PENGUINS[FEATURES].copy()
    frame.loc[len(frame)] = [44.0, "Atlantis", 200.0, "male", 4200.0]  # unseen island
    if missing == "drop":
        frame = frame[frame.notna().all(axis=1)]
    raw = [
        [None if pd.isna(v) else (float(v) if name in NUMERIC else v) for name, v in row.items()]
        for _, row in frame.iterrows()
    ]
    feeds = {
        name: (
            frame[[name]].astype(np.float32).to_numpy()
            if name in NUMERIC
            else frame[[name]].fillna("").astype(str).to_numpy()
        )
        for name in FEATURES
    }
    [labels] = session.run(["label"], feeds)
    predicted = await client.post(f"/v1/models/{model_id}/predict", json={"X": raw})
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_array_equal(labels, predicted.json()["labels"])


async def test_stability_run_on_a_table_equals_the_pipeline_per_seed(
    client: httpx.AsyncClient,
) -> None:
    # Check that a stability run on the penguins table (imputed, one-hot encoded) gives
    # the mean and spread of the inertia, and the seeds' agreement (ARI), of the
    # ColumnTransformer pipeline fitted once per seed by scikit-learn directly.
    from itertools import combinations

    from sklearn.metrics import adjusted_rand_score

    info = await upload(client, penguins_csv(), "text/csv")
    seeds = [1, 2, 3]
    response = await client.post(
        "/v1/stability",
        json={
            "dataset": info["id"],
            "n_clusters": 3,
            "seeds": seeds,
            "strategies": ["k-means++"],
            "missing": "impute",
        },
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    fits = [direct(PENGUINS, impute=True, random_state=seed) for seed in seeds]
    inertias = [f[-1].inertia_ for f in fits]
    assert_allclose(result["inertia"]["mean"], np.mean(inertias), rtol=RTOL)
    assert_allclose(result["inertia"]["std"], np.std(inertias), rtol=RTOL, atol=1e-9)
    aris = [adjusted_rand_score(a[-1].labels_, b[-1].labels_) for a, b in combinations(fits, 2)]
    assert_allclose(result["seed_ari"]["min"], min(aris), rtol=RTOL)
    assert_allclose(result["seed_ari"]["mean"], np.mean(aris), rtol=RTOL)


async def test_cluster_profiles_of_a_table_equal_pandas_group_by(
    client: httpx.AsyncClient,
) -> None:
    # Check that a table model's profiles are in the data's own units (numbers as
    # imputed, before scaling) and give each category's share in each cluster, as
    # pandas' group-by of the imputed table by the pipeline's labels.
    info = await upload(client, penguins_csv(), "text/csv")
    body = await benchmark(client, info["id"], missing="impute")
    model = (await client.get(f"/v1/models/{body['results'][0]['model_id']}")).json()
    pipeline = direct(PENGUINS, impute=True)
    imputed = features(PENGUINS)
    for name in NUMERIC:
        imputed[name] = imputed[name].fillna(imputed[name].mean())
    for name in CATEGORICAL:
        imputed[name] = imputed[name].fillna(imputed[name].mode().min())
    groups = imputed.groupby(pipeline[-1].labels_)
    means, stds = groups[NUMERIC].mean(), groups[NUMERIC].std()
    for cluster in model["clusters"]:
        label = cluster["label"]
        assert cluster["size"] == int((pipeline[-1].labels_ == label).sum())
        for name in NUMERIC:
            assert_allclose(cluster["mean"][name], means.loc[label, name], rtol=RTOL)
            assert_allclose(cluster["std"][name], stds.loc[label, name], rtol=RTOL)
        for name in CATEGORICAL:
            shares = groups[name].value_counts(normalize=True).loc[label]
            for category in sorted(imputed[name].unique()):
                expected = shares.get(category, 0.0)
                assert_allclose(cluster["mean"][f"{name}={category}"], expected, rtol=RTOL)


async def test_shape_limits_count_the_encoded_width(client: httpx.AsyncClient) -> None:
    # Check that what depends on the data's shape counts a table's categories one-hot
    # encoded: the boundary plot of a single categorical column of 3 categories (3
    # features to KMeans) is drawn, and a sweep runs pca at every k up to the encoded
    # width of the penguins table (8: 3 numbers, 3 islands, 2 sexes), past its 5 columns.
    words = "".join(f"{['red', 'green', 'blue'][i % 3]},{i % 2}\n" for i in range(30))
    single = await upload(client, ("colour,species\n" + words).encode(), "text/csv")
    assert single["n_features"] == 1
    body = await benchmark(client, single["id"])
    plot = await client.get(body["plot_url"])
    assert plot.status_code == 200, plot.text
    assert plot.headers["content-type"] == "image/png"

    info = await upload(client, penguins_csv(), "text/csv")
    swept = await client.post(
        "/v1/sweeps",
        json={
            "dataset": info["id"],
            "k": {"min": 2, "max": 8},
            "strategies": ["pca"],
            "missing": "drop",
        },
    )
    assert swept.status_code == 200, swept.text
    ks = sorted({row["k"] for row in swept.json()["results"] if row["init"] == "pca"})
    assert ks == list(range(2, 9))
    assert swept.json()["warnings"] == []


async def test_a_wide_one_hot_encoding_is_refused_at_upload(tmp_path: Path) -> None:
    # Check that the cell bound counts the one-hot encoded width: a column of 100
    # distinct strings in 100 rows is 200 cells as sent but 10,100 encoded (a column of
    # 100,000 distinct strings was a 1 MB upload whose fit needed a dense 80 GB matrix).
    rows = [f"{i}.5,word{i}" for i in range(100)]
    body = ("v,w\n" + "\n".join(rows) + "\n").encode()
    async with serve(make_settings(tmp_path / "data", max_cells=1000)) as small:
        before = (await small.get("/v1/datasets")).json()["datasets"]
        response = await small.post(
            "/v1/datasets", content=body, headers={"content-type": "text/csv"}
        )
        assert response.status_code == 413, response.text
        assert "one-hot encoded" in response.json()["detail"]
        assert (await small.get("/v1/datasets")).json()["datasets"] == before


@pytest.mark.parametrize("empty", ["b_numbers", "b_words"])
async def test_imputing_a_column_with_no_value_is_a_422_naming_it(
    client: httpx.AsyncClient, empty: str
) -> None:
    # Check that missing="impute" on a column holding no value at all is a 422 naming it:
    # the most frequent of no category was a 500, the mean of no number a NaN left in.
    rows = [f"{i}.25,,{'x' if i % 2 else 'y'}" for i in range(12)]
    body = (f"a,{empty},c\n" + "\n".join(rows) + "\n").encode()
    params = {"categorical": empty} if empty == "b_words" else {}
    response = await client.post(
        "/v1/datasets", content=body, headers={"content-type": "text/csv"}, params=params
    )
    assert response.status_code in (200, 201), response.text
    refused = await client.post(
        "/v1/benchmarks",
        json={"dataset": response.json()["id"], "n_clusters": 2, "missing": "impute"},
    )
    assert refused.status_code == 422, refused.text
    assert f"'{empty}' hold no value at all" in refused.json()["detail"]


async def test_a_report_has_the_plot_of_one_categorical_column(client: httpx.AsyncClient) -> None:
    # Check that the report decides on a plot as the answer's plot_url does, by the
    # encoded width: one column of three categories is three features, plotted, yet the
    # report said "No plot: the data has one feature".
    body = ("w\n" + "\n".join(["red", "green", "blue"] * 8) + "\n").encode()
    dataset = await client.post("/v1/datasets", content=body, headers={"content-type": "text/csv"})
    assert dataset.status_code in (200, 201), dataset.text
    result = await benchmark(client, dataset.json()["id"])
    assert result["plot_url"] is not None
    page = await client.get(f"/v1/benchmarks/{result['id']}/report")
    assert page.status_code == 200, page.text
    assert "No plot" not in page.text
    assert "data:image/png;base64," in page.text
