"""A sweep's question: its parameters after defaults, its checks against the data, its
id and its steps. Read in the API process, without scikit-learn."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict

from service import benchmark as bm
from service.errors import InvalidParameterError, ServiceError
from service.params import FitParams, fit_form

DEFAULT_K = tuple(range(2, 11))
SCORE_SPACE: bm.ScoreSpace = "clustered"
# Salted into the id, so that no answer computed before is served as a new one: 2 since
# the internal scores are measured in SCORE_SPACE (1 measured them on the data as given),
# 3 since recommended_k is the first strategy's (2 took each k's best run of any).
REVISION = 3


class SweepParams(FitParams):
    """A sweep request after defaults were applied; ``dataset`` is a content id. The
    fit's fields and their defaults are :class:`service.params.FitParams`'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    k: tuple[int, ...]
    strategies: tuple[bm.Strategy, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "k": list(self.k),
            "strategies": [s.as_dict() for s in self.strategies],
            **fit_form(self),
        }

    def benchmark_at(self, k: int) -> bm.BenchmarkParams:
        """The one benchmark this sweep runs at ``k``."""
        return bm.BenchmarkParams(
            dataset=self.dataset, n_clusters=k, strategies=self.strategies, **self.fit_params()
        )


def sweep_id(params: SweepParams) -> str:
    """The request hash: params after defaults, dataset by content, versions salted in."""
    return hashlib.sha256(
        bm.canonical_json(
            {"sweep": params.as_dict(), "versions": bm.versions(params), "revision": REVISION}
        )
    ).hexdigest()


def k_values(k: Sequence[int] | tuple[int, int] | None) -> tuple[int, ...]:
    """The sorted distinct values of k; ``None`` is the default 2..10."""
    return DEFAULT_K if k is None else tuple(sorted(set(k)))


def check_sweep(params: SweepParams, n_samples: int, n_features: int) -> None:
    """Reject a sweep the data cannot satisfy, naming the k and the strategy.

    Raises
    ------
    InvalidParameterError
        A k the scores are undefined for (k > n_samples - 1), a custom strategy (its
        centres fit one k only), a strategy that runs at no k, or what
        :func:`service.benchmark.check_params` refuses.
    """
    for i, strategy in enumerate(params.strategies):
        if strategy.init == "custom":
            raise InvalidParameterError(
                "a sweep cannot use strategy 'custom': its centres fit one k only",
                errors=[{"loc": ["strategies", i], "msg": "custom centres fit one k only"}],
            )
    too_large = [k for k in params.k if k > n_samples - 1]
    if too_large:
        raise InvalidParameterError(
            f"k={too_large[0]} is too large for {n_samples} samples: the scores need "
            f"k <= n_samples - 1 = {n_samples - 1}",
            errors=[{"loc": ["k"], "msg": f"each k must be <= {n_samples - 1}"}],
        )
    skips = skipped(params, n_samples, n_features)
    for k in params.k:
        # A strategy that runs at no k is not skipped: it is refused at the first k.
        benchmark = params.benchmark_at(k)
        running = tuple(s for s in benchmark.strategies if k not in skips.get(s.init, ()))
        try:
            bm.check_params(
                benchmark.model_copy(update={"strategies": running}), n_samples, n_features
            )
        except ServiceError as exc:
            raise type(exc)(f"at k={k}: {exc.detail}", errors=exc.errors) from None


def skipped(params: SweepParams, n_samples: int, n_features: int) -> dict[str, tuple[int, ...]]:
    """The k each strategy cannot run at on data of this shape (``pca`` past
    min(n_samples, n_features)), for the strategies that run at some k."""
    out: dict[str, tuple[int, ...]] = {}
    for strategy in params.strategies:
        ks = tuple(
            k
            for k in params.k
            if bm.cannot_run(strategy.init, k, params.estimator, n_samples, n_features)
        )
        if ks and len(ks) < len(params.k):
            out[strategy.init] = ks
    return out


def skip_warnings(params: SweepParams, n_samples: int, n_features: int) -> list[str]:
    """One warning per strategy skipped at some k, naming those k and why."""
    return [
        f"strategy {init!r} skipped at k={', '.join(map(str, ks))}: it "
        f"{bm.cannot_run(init, ks[0], params.estimator, n_samples, n_features)}"
        for init, ks in skipped(params, n_samples, n_features).items()
    ]


def steps(params: SweepParams, n_samples: int, n_features: int) -> list[tuple[int, int]]:
    """The sweep's steps on data of this shape (executor steps), in the order of
    its results: (k, index of the strategy), the skipped ones left out."""
    skips = skipped(params, n_samples, n_features)
    return [
        (k, index)
        for k in params.k
        for index, strategy in enumerate(params.strategies)
        if k not in skips.get(strategy.init, ())
    ]
