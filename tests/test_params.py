"""KMeans' parameters declared once (service.params): MiniBatchKMeans' ``batch_size`` and
BisectingKMeans' ``bisecting_strategy`` reach benchmarks, sweeps and stability runs with
scikit-learn's numbers, are refused for an estimator that does not take them, and are
left out of every id at their defaults."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service import cli
from service.benchmark import (
    BenchmarkParams,
    Strategy,
    benchmark_id,
    check_params,
    model_id,
    run_benchmark,
)
from service.client import BENCHMARK, KINDS
from service.datasets import load_builtin
from service.errors import InvalidParameterError
from service.params import ESTIMATORS, FitParams, LaterParams, pace_form
from service.schemas import BenchmarkRequest, StabilityRequest, SweepRequest
from service.stability import StabilityParams, run_stability, stability_id
from service.sweeps import SweepParams, run_sweep, sweep_id
from tests.reference import assert_all_match, family_scores

N_INIT = {"k-means++": 4, "random": 4, "pca": 1}
# Each new parameter, its estimator and a value other than its default.
NEW = [("batch_size", "minibatch", 50), ("bisecting_strategy", "bisecting", "largest_cluster")]


def strategies(*inits: str) -> tuple[Strategy, ...]:
    return tuple(Strategy(init, N_INIT[init]) for init in inits)


def bench(n_clusters: int, *inits: str, **kwargs: Any) -> BenchmarkParams:
    return BenchmarkParams(
        dataset="0" * 64, n_clusters=n_clusters, strategies=strategies(*inits), **kwargs
    )


@pytest.mark.parametrize(("field", "estimator", "value"), NEW)
def test_new_parameters_give_sklearns_numbers(field: str, estimator: str, value: Any) -> None:
    # Check a benchmark with each new parameter against scikit-learn called directly, and
    # that the value reached the fit (the numbers differ from the default's).
    X, y = load_builtin("wine")
    (outcome,) = run_benchmark(X, y, bench(5, "random", estimator=estimator, **{field: value}))
    got = {"inertia": outcome.inertia, "n_iter": outcome.n_iter, **outcome.scores}
    expected = family_scores(X, y, "random", n_clusters=5, estimator=estimator,
                             options={field: value})  # fmt: skip
    assert_all_match(got, expected)
    default = family_scores(X, y, "random", n_clusters=5, estimator=estimator)
    assert not np.isclose(got["inertia"], default["inertia"], rtol=1e-9)


@pytest.mark.parametrize(("field", "estimator", "value"), NEW)
def test_new_parameters_reach_sweeps_and_stability_runs(
    field: str, estimator: str, value: Any
) -> None:
    # Check a sweep's points and a stability run's seeds with each new parameter against
    # scikit-learn, the scores measured where the estimator clustered.
    X, y = load_builtin("iris")
    options = {field: value}
    sweep = SweepParams(dataset="0" * 64, k=(2, 4), strategies=strategies("k-means++"),
                        estimator=estimator, **options)  # fmt: skip
    for point in run_sweep(X, y, sweep):
        expected = family_scores(X, y, "k-means++", n_clusters=point["k"], estimator=estimator,
                                 score_space="clustered", options=options)  # fmt: skip
        assert_all_match(point, expected)
    run = StabilityParams(bench(3, "random", estimator=estimator, **options), (0, 5))
    (result,) = run_stability(X, y, run)
    for row, seed in zip(result["per_seed"], (0, 5), strict=True):
        expected = family_scores(X, y, "random", n_clusters=3, estimator=estimator,
                                 random_state=seed, score_space="clustered", sample_state=0,
                                 options=options)  # fmt: skip
        np.testing.assert_allclose(row["inertia"], expected["inertia"], rtol=1e-9)
        np.testing.assert_allclose(row["silhouette"], expected["silhouette"], rtol=1e-9)


@pytest.mark.parametrize(("field", "estimator", "value"), NEW)
def test_new_parameters_are_in_ids_only_when_set(field: str, estimator: str, value: Any) -> None:
    # Check that a new parameter at its default leaves the benchmark's, model's, sweep's
    # and stability run's ids as they were, and that another value changes each.
    plain = bench(3, "random", estimator=estimator)
    default = FitParams.model_fields[field].default
    written = bench(3, "random", estimator=estimator, **{field: default})
    other = bench(3, "random", estimator=estimator, **{field: value})
    assert field not in plain.as_dict()
    assert field not in plain.hashed_form()
    assert benchmark_id(plain) == benchmark_id(written) != benchmark_id(other)
    s = plain.strategies[0]
    assert model_id(plain, s) == model_id(written, s) != model_id(other, s)
    assert other.as_dict()[field] == value
    sweeps = [
        SweepParams(dataset="0" * 64, k=(2, 3), strategies=p.strategies, **p.fit_params())
        for p in (plain, written, other)
    ]
    assert sweep_id(sweeps[0]) == sweep_id(sweeps[1]) != sweep_id(sweeps[2])
    runs = [StabilityParams(p, (0, 1)) for p in (plain, written, other)]
    assert stability_id(runs[0]) == stability_id(runs[1]) != stability_id(runs[2])


@pytest.mark.parametrize(
    ("estimator", "field", "value", "takers"),
    [
        ("kmeans", "batch_size", 50, "'minibatch'"),
        ("bisecting", "batch_size", 50, "'minibatch'"),
        ("kmeans", "bisecting_strategy", "largest_cluster", "'bisecting'"),
        ("minibatch", "bisecting_strategy", "largest_cluster", "'bisecting'"),
        ("minibatch", "algorithm", "elkan", "'kmeans' and 'bisecting'"),
    ],
)
def test_a_parameter_of_another_estimator_is_refused(
    estimator: str, field: str, value: Any, takers: str
) -> None:
    # Check that a field the estimator table does not pass to the estimator is a 422
    # naming the field, the estimator and the estimators that take it.
    name = ESTIMATORS[estimator].cls
    with pytest.raises(InvalidParameterError) as info:
        check_params(bench(3, "random", estimator=estimator, **{field: value}), 150, 4)
    assert info.value.detail == (
        f"estimator {estimator!r} ({name}) has no {field} parameter: "
        f"{field}={value!r} applies to {takers} only"
    )
    assert info.value.errors[0]["loc"] == [field]


def test_each_field_is_declared_once_and_reaches_every_request() -> None:
    # Check that the three requests, the resolved parameters, the client and the command
    # take every fit parameter from the one model, and sweeps' strategies are a benchmark's.
    fields = set(FitParams.model_fields)
    assert {"batch_size", "bisecting_strategy"} <= set(LaterParams.model_fields) <= fields
    for model in (BenchmarkRequest, SweepRequest, StabilityRequest, BenchmarkParams, SweepParams):
        assert fields <= set(model.model_fields), model
    assert (
        SweepRequest.model_fields["strategies"].annotation
        == BenchmarkRequest.model_fields["strategies"].annotation
    )
    assert BENCHMARK.body("iris", {"batch_size": 50})["batch_size"] == 50
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command, kind in (("run", "benchmark"), ("sweep", "sweep"), ("stability", "stability")):
        args = commands[command].parse_args(
            ["--batch-size", "50", "--bisecting-strategy", "largest_cluster"]
        )
        sent = cli.request_fields(args, KINDS[kind])
        assert sent == {"batch_size": 50, "bisecting_strategy": "largest_cluster"}
        KINDS[kind].request.model_validate(sent)


def test_the_pace_form_is_every_fit_setting_but_the_seed() -> None:
    # Check that computations alike but for their seed share a pace (service.runtime.Pace:
    # 16 digits benchmarks at once, each its own random_state, start from one), and that
    # any setting that may change a fit's cost per unit of k x n_init keeps its own.
    base = bench(10, "k-means++")
    assert pace_form(base) == pace_form(bench(10, "k-means++", random_state=7))
    assert pace_form(base) == pace_form(bench(40, "random"))  # k x n_init is the weight
    for name, value in [("max_iter", 5), ("tol", 0.5), ("algorithm", "elkan")]:
        assert pace_form(base) != pace_form(bench(10, "k-means++", **{name: value})), name
    assert "random_state" not in pace_form(base)
