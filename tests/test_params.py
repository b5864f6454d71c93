"""KMeans' parameters declared once (service.params): every request, the resolved
parameters, the client and the command take them from the one model."""

from __future__ import annotations

from service import cli
from service.benchmark import BenchmarkParams
from service.client import BENCHMARK, KINDS
from service.params import FitParams, LaterParams
from service.schemas import BenchmarkRequest, StabilityRequest, SweepRequest
from service.sweeps import SweepParams


def test_each_field_is_declared_once_and_reaches_every_request() -> None:
    # Check that the three requests, the resolved parameters, the client and the command
    # take every fit parameter from the one model, and sweeps' strategies are a benchmark's.
    fields = set(FitParams.model_fields)
    assert {"missing", "normalize"} <= set(LaterParams.model_fields) <= fields
    for model in (BenchmarkRequest, SweepRequest, StabilityRequest, BenchmarkParams, SweepParams):
        assert fields <= set(model.model_fields), model
    assert (
        SweepRequest.model_fields["strategies"].annotation
        == BenchmarkRequest.model_fields["strategies"].annotation
    )
    assert BENCHMARK.body("iris", {"estimator": "minibatch"})["estimator"] == "minibatch"
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command, kind in (("run", "benchmark"), ("sweep", "sweep"), ("stability", "stability")):
        args = commands[command].parse_args(["--estimator", "minibatch", "--max-iter", "9"])
        sent = cli.request_fields(args, KINDS[kind])
        assert sent == {"estimator": "minibatch", "max_iter": 9}
        KINDS[kind].request.model_validate(sent)
