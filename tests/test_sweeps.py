"""Choosing k: every number of a sweep against scikit-learn, and the recommended k."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from service.benchmark import VERSIONS, Strategy, canonical_json
from service.datasets import load_builtin
from service.errors import InvalidParameterError
from service.schemas import SweepResult
from service.sweeps import (
    TABLE_HEADER,
    SweepParams,
    build_body,
    check_sweep,
    compose_sweep,
    elbow,
    format_table,
    recommend,
    render_sweep,
    run_sweep,
    sweep_id,
)
from tests.helpers import png_size
from tests.reference import assert_all_match, family_scores


def params(ks: range | list[int], *inits: str, **kwargs: object) -> SweepParams:
    n_init = {"k-means++": 4, "random": 4, "pca": 1}
    strategies = tuple(Strategy(init, n_init[init]) for init in inits)
    return SweepParams(dataset="0" * 64, k=tuple(ks), strategies=strategies, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("estimator", ["kmeans", "minibatch", "bisecting"])
def test_sweep_numbers_match_sklearn(estimator: str) -> None:
    # Check that every (k, strategy) of a sweep equals scikit-learn called directly, the
    # internal scores measured on the scaled data KMeans clustered.
    X, y = load_builtin("iris")
    inits = ("k-means++", "random") if estimator == "bisecting" else ("k-means++", "pca")
    results = run_sweep(X, y, params(range(2, 5), *inits, estimator=estimator))
    assert [(r["k"], r["init"]) for r in results] == [(k, i) for k in range(2, 5) for i in inits]
    for r in results:
        expected = family_scores(
            X, y, r["init"], n_clusters=r["k"], estimator=estimator, score_space="clustered"
        )
        assert_all_match(r, expected)
        assert r["fit_time"] > 0


def test_sweep_scores_are_measured_where_kmeans_clustered() -> None:
    # Check the issue's case: on wine the Davies-Bouldin index at k=4 is 1.77 in the
    # scaled space KMeans clustered (20.6 on the unscaled data, an artefact of the
    # features' units), and the answer says where its scores were measured.
    X, y = load_builtin("wine")
    p = params(range(2, 6), "k-means++")
    results = run_sweep(X, y, p)
    Z = StandardScaler().fit_transform(X)
    for r in results:
        labels = family_scores(X, y, "k-means++", n_clusters=r["k"])["labels"]
        np.testing.assert_allclose(
            r["davies_bouldin"], metrics.davies_bouldin_score(Z, labels), rtol=1e-9
        )
        np.testing.assert_allclose(
            r["calinski_harabasz"], metrics.calinski_harabasz_score(Z, labels), rtol=1e-9
        )
    at_4 = next(r for r in results if r["k"] == 4)
    assert round(at_4["davies_bouldin"], 2) == 1.77
    body = build_body("f" * 64, {"n_samples": 178, "n_features": 13}, p, results)
    assert body["score_space"] == "clustered"
    assert body["warnings"] == []


def test_unlabelled_sweep_has_null_label_scores() -> None:
    # Check generated data without labels: label scores null, the rest scikit-learn's
    # (unscaled, the space KMeans clustered is the data as given).
    X, _ = make_blobs(n_samples=150, centers=3, n_features=4, random_state=1)
    for r in run_sweep(X, None, params([2, 4], "random", random_state=4, scale=False)):
        assert r["ari"] is None
        expected = family_scores(X, None, "random", n_clusters=r["k"], random_state=4, scale=False)
        assert_all_match(r, expected)


@pytest.mark.parametrize("true_k", [3, 5, 8])
def test_recommended_k_finds_well_separated_blobs(true_k: int) -> None:
    # Check that silhouette, Davies-Bouldin and Calinski-Harabasz pick the true k of
    # well separated blobs, and the elbow where Kneedle can.
    X, y = make_blobs(
        n_samples=60 * true_k,
        centers=true_k,
        n_features=4,
        cluster_std=0.5,
        center_box=(-30.0, 30.0),
        random_state=true_k,
    )
    results = run_sweep(X, y, params(range(2, 13), "k-means++", scale=False))
    picks = recommend(results, "k-means++")
    assert picks["silhouette"] == picks["davies_bouldin"] == picks["calinski_harabasz"] == true_k
    # Kneedle finds k = 3 and 5; at 8 the inertia curve on 2..12 bends first at 5 (the
    # knee is where the curve is farthest from its chord, which a late k flattens).
    assert picks["elbow"] == (true_k if true_k < 8 else 5)


def test_elbow_is_kneedle() -> None:
    # Check the elbow on a textbook curve, and null where there is no knee to find.
    ks = list(range(1, 10))
    assert elbow(ks, [100, 40, 12, 10, 9, 8.5, 8, 7.8, 7.6]) == 3
    assert elbow([2, 3], [10.0, 5.0]) is None
    assert elbow(ks, [10.0] * 9) is None


def test_recommend_skips_nulls_and_takes_each_strategys_own_rows() -> None:
    # Check that a null score is skipped and that each strategy's k comes from its own
    # rows, whatever another strategy scored.
    rows = [
        {"k": 2, "init": "a", "inertia": 9.0, "silhouette": 0.1, "davies_bouldin": None,
         "calinski_harabasz": 5.0},
        {"k": 2, "init": "b", "inertia": 8.0, "silhouette": 0.9, "davies_bouldin": None,
         "calinski_harabasz": 1.0},
        {"k": 3, "init": "a", "inertia": 4.0, "silhouette": 0.5, "davies_bouldin": 0.7,
         "calinski_harabasz": 7.0},
    ]  # fmt: skip
    assert recommend(rows, "a") == {
        "silhouette": 3,
        "davies_bouldin": 3,
        "calinski_harabasz": 3,
        "elbow": None,
    }
    assert recommend(rows, "b")["silhouette"] == 2


def test_check_sweep_refuses_impossible_sweeps() -> None:
    # Check that k beyond n_samples - 1, pca beyond n_features at every k and custom are
    # refused, each naming the k or the strategy.
    with pytest.raises(InvalidParameterError, match=r"k=10 is too large for 10 samples"):
        check_sweep(params([2, 10], "random"), n_samples=10, n_features=5)
    with pytest.raises(InvalidParameterError, match=r"at k=6: strategy 'pca'"):
        check_sweep(params([6, 7], "pca", "random"), n_samples=100, n_features=5)
    custom = SweepParams(
        dataset="0" * 64, k=(2,), strategies=(Strategy("custom", 1, ((0.0,), (1.0,))),)
    )
    with pytest.raises(InvalidParameterError, match="cannot use strategy 'custom'"):
        check_sweep(custom, n_samples=100, n_features=1)


def test_sweep_skips_the_k_where_pca_cannot_run() -> None:
    # Check that pca is skipped at each k past min(n_samples, n_features), with a warning
    # naming those k, while the other strategies run at every k and pca at the rest.
    X, y = load_builtin("iris")
    p = params(range(3, 7), "k-means++", "pca")
    check_sweep(p, n_samples=150, n_features=4)
    results = run_sweep(X, y, p)
    assert [(r["k"], r["init"]) for r in results] == [
        (3, "k-means++"), (3, "pca"), (4, "k-means++"), (4, "pca"), (5, "k-means++"),
        (6, "k-means++"),
    ]  # fmt: skip
    for r in results:
        assert_all_match(
            r, family_scores(X, y, r["init"], n_clusters=r["k"], score_space="clustered")
        )
    body = build_body(
        "f" * 64,
        {"id": "0" * 64, "name": "iris", "n_samples": 150, "n_features": 4, "has_labels": True},
        p,
        results,
    )
    assert body["warnings"] == [
        "strategy 'pca' skipped at k=5, 6: it takes n_clusters=5 principal components, "
        "but the data has only min(n_samples, n_features)=4"
    ]
    assert body["recommended_k_by_strategy"]["pca"]["silhouette"] in (3, 4)
    assert render_sweep(SweepResult.model_validate(body)).startswith(b"\x89PNG")


def test_ids_and_plot() -> None:
    # Check that the id changes with k and strategies, and is not the id the same
    # request had when its scores were measured on the unscaled data (stored answers
    # computed that way are never served as new ones); and that the plot is a PNG, the
    # same bytes each time.
    old = hashlib.sha256(
        canonical_json({"sweep": params([2, 3], "random").as_dict(), "versions": VERSIONS})
    ).hexdigest()
    assert sweep_id(params([2, 3], "random")) != old
    assert sweep_id(params([2, 3], "random")) != sweep_id(params([2, 4], "random"))
    assert sweep_id(params([2, 3], "random")) != sweep_id(params([2, 3], "k-means++"))
    X, y = load_builtin("iris")
    p = params(range(2, 6), "k-means++", "random")
    body = build_body(
        "f" * 64,
        {"id": "0" * 64, "name": "iris", "n_samples": 150, "n_features": 4, "has_labels": True},
        p,
        run_sweep(X, y, p),
    )
    png = render_sweep(SweepResult.model_validate(body))
    assert png.startswith(b"\x89PNG")
    assert png == render_sweep(SweepResult.model_validate(body))
    assert png_size(png)[0] > png_size(png)[1]
    assert np.isfinite(body["results"][0]["calinski_harabasz"])


def fake_rows(init: str, silhouettes: list[float], inertia: list[float]) -> list[dict[str, Any]]:
    """Rows of one strategy at k = 2, 3, ...: the given silhouettes and inertia, the other
    scores null."""
    return [
        {"k": k, "init": init, "n_init": 4, "inertia": i, "n_iter": 3, "silhouette": s,
         "davies_bouldin": None, "calinski_harabasz": None, "homogeneity": None,
         "completeness": None, "v_measure": None, "ari": None, "ami": None, "fit_time": 0.01,
         "warnings": []}
        for k, (s, i) in enumerate(zip(silhouettes, inertia, strict=True), start=2)
    ]  # fmt: skip


def two_strategy_body() -> dict[str, Any]:
    """A sweep whose strategies disagree: random (listed first) picks k=2 by silhouette
    and k=3 by the elbow, k-means++ k=4 by both; the best run of any strategy is
    k-means++'s at k=4."""
    rows = fake_rows("random", [0.5, 0.4, 0.3, 0.2, 0.1], [90.0, 40.0, 30.0, 25.0, 22.0])
    rows += fake_rows("k-means++", [0.2, 0.3, 0.9, 0.4, 0.3], [100.0, 80.0, 30.0, 25.0, 23.0])
    rows.sort(key=lambda r: r["k"])
    p = params([2, 3, 4, 5, 6], "random", "k-means++")
    return build_body("e" * 64, {"id": "48cf67b0" + "0" * 56, "name": None, "n_samples": 99,
                                 "n_features": 5, "has_labels": False}, p, rows)  # fmt: skip


def test_top_level_recommended_k_is_the_first_strategys() -> None:
    # Check that recommended_k is the first strategy's own answer (it was each k's best
    # run of any strategy: k-means++'s k=4 here, though random was listed first).
    body = two_strategy_body()
    assert body["recommended_k_by_strategy"]["random"]["silhouette"] == 2
    assert body["recommended_k_by_strategy"]["k-means++"]["silhouette"] == 4
    assert body["recommended_k_by_strategy"]["random"]["elbow"] == 3
    assert body["recommended_k"] == body["recommended_k_by_strategy"]["random"]
    assert list(body["recommended_k_by_strategy"]) == ["random", "k-means++"]


def test_sweep_plot_marks_every_strategys_k_in_a_tight_figure() -> None:
    # Check that each panel has a dashed line at each strategy's recommended k, in that
    # strategy's colour and named in the panel's legend (the inertia panel's as the
    # elbow); that every text lies inside the figure and no k label sits on a panel's
    # frame; that the title is close above the panels (no empty band); and that an
    # unnamed upload is called "uploaded data (48cf67b0)", not "the dataset 48cf67b0
    # dataset".
    body = two_strategy_body()
    figure = compose_sweep(SweepResult.model_validate(body))
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    figure.canvas.draw()  # type: ignore[attr-defined]
    title = figure.get_suptitle()
    assert "uploaded data (48cf67b0)" in title
    assert "dataset 48cf67b0" not in title
    width, height = figure.canvas.get_width_height()  # type: ignore[attr-defined]
    axes_list = figure.get_axes()
    title_box = figure._suptitle.get_window_extent(renderer)  # type: ignore[union-attr]
    # An axes' tight box holds everything it draws: ticks, labels, title, legend.
    for box in [title_box, *(a.get_tightbbox(renderer) for a in axes_list)]:
        assert 0 <= box.x0 <= box.x1 <= width, box
        assert 0 <= box.y0 <= box.y1 <= height, box
    assert len(axes_list) == 4
    top_of_panels = max(a.get_tightbbox(renderer).y1 for a in axes_list)
    assert title_box.y0 - top_of_panels < 0.05 * height, (title_box, top_of_panels)
    picks = body["recommended_k_by_strategy"]
    for axes, criterion in zip(axes_list, ("elbow", "silhouette"), strict=False):
        lines = {
            line.get_label(): line
            for line in axes.get_lines()
            if line.get_linestyle() not in ("-", "None")
        }
        # axvline draws in axes coordinates along y: its x data is the k twice.
        assert {line.get_xdata()[0] for line in lines.values()} == {
            picks[init][criterion] for init in picks
        }
        labels = [t.get_text() for t in axes.get_legend().get_texts()]
        what = "elbow" if criterion == "elbow" else "best"
        for init in picks:
            assert f"{what}: k={picks[init][criterion]} ({init})" in labels
        for text in axes.texts:  # the old " k=4" labels sat on the top of the frame
            assert not text.get_text().strip().startswith("k="), text


def test_sweep_text_table() -> None:
    # Check the text answer: where the scores were measured, one row per (k, strategy)
    # with the seed's digits, each strategy's recommended k (the first marked as the
    # top-level one), and the warnings.
    body = two_strategy_body()
    body["warnings"] = ["strategy 'pca' skipped at k=9"]
    lines = format_table(SweepResult.model_validate(body)).splitlines()
    assert lines[0] == (
        "k in [2, 3, 4, 5, 6], estimator kmeans; silhouette, DB and CH measured in the "
        "clustered space"
    )
    assert lines[1] == lines[13] == "_" * 110
    assert lines[2].split("\t") == list(TABLE_HEADER)
    first = lines[3].split("\t")
    assert [first[0], first[1].strip(), first[3], first[4], first[5]] == ["2", "random", "90",
                                                                          "0.500", "-"]  # fmt: skip
    assert lines[12].split("\t")[:2] == ["6", "k-means++"]  # 10 rows: k=2..6 x 2 strategies
    assert lines[14] == "recommended k\tsilhouette\tdavies_bouldin\tcalinski_harabasz\telbow"
    assert lines[15].split("\t") == ["random (recommended_k)", "2", "-", "-", "3"]
    assert lines[16].split("\t") == ["k-means++", "4", "-", "-", "4"]
    assert lines[17:] == ["warning: strategy 'pca' skipped at k=9"]
