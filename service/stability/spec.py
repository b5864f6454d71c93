"""A stability run's question: its parameters after defaults, its checks and id. Read in
the API process, without scikit-learn."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from service import benchmark as bm
from service.errors import PayloadTooLargeError

MAX_SEEDS = 100
# Salted into the id: 2 since the internal scores are measured in SCORE_SPACE and the
# silhouette's sample is drawn once per run (1 measured them on the data as given, on a
# sample redrawn per seed), so that no answer computed before is served as a new one.
REVISION = 2


@dataclass(frozen=True)
class StabilityParams:
    """A stability request after defaults: a benchmark (its ``random_state`` unused)
    and the seeds it runs with."""

    benchmark: bm.BenchmarkParams
    seeds: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        params = self.benchmark.as_dict()
        del params["random_state"]
        params["seeds"] = list(self.seeds)
        return params


def stability_id(params: StabilityParams) -> str:
    """The request hash: params after defaults, dataset by content, versions salted in."""
    return hashlib.sha256(
        bm.canonical_json(
            {
                "stability": params.as_dict(),
                "versions": bm.versions(params.benchmark),
                "revision": REVISION,
            }
        )
    ).hexdigest()


def check_labels(params: StabilityParams, n_samples: int, max_labels: int) -> None:
    """Refuse a run whose kept labels (every seed's, for the pairwise ARI) pass the bound.

    Raises
    ------
    PayloadTooLargeError
        Naming seeds x n_samples, the bound and its setting.
    """
    n_seeds = len(params.seeds)
    if n_seeds * n_samples > max_labels:
        raise PayloadTooLargeError(
            f"{n_seeds} seeds x {n_samples} samples is {n_seeds * n_samples} labels kept for "
            f"the pairwise adjusted Rand index, more than the limit of {max_labels} "
            "(CLUSTERBENCH_STABILITY_MAX_LABELS); ask with fewer seeds or on fewer samples",
            errors=[{"loc": ["seeds"], "msg": f"at most {max(1, max_labels // n_samples)} seeds"}],
        )


def seed_list(seeds: int | list[int]) -> tuple[int, ...]:
    """``n`` -> 0..n-1; a list keeps its order, without repeats."""
    return tuple(range(seeds)) if isinstance(seeds, int) else tuple(dict.fromkeys(seeds))
