"""The result cache: benchmark results and fitted models, by request hash."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from service.benchmark import FittedModel


@dataclass
class StoredBenchmark:
    """A computed benchmark: its response body (as first computed) and fitted models."""

    id: str
    body: dict[str, Any]
    models: dict[str, FittedModel] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)


class MemoryStore:
    """Results kept in this process's memory."""

    def __init__(self) -> None:
        self._benchmarks: dict[str, StoredBenchmark] = {}
        self._models: dict[str, FittedModel] = {}
        self._lock = threading.Lock()

    def get(self, benchmark_id: str) -> StoredBenchmark | None:
        with self._lock:
            return self._benchmarks.get(benchmark_id)

    def put(self, entry: StoredBenchmark) -> None:
        with self._lock:
            self._benchmarks[entry.id] = entry
            self._models.update(entry.models)

    def get_plot(self, benchmark_id: str, key: str) -> bytes | None:
        with self._lock:
            entry = self._benchmarks.get(benchmark_id)
            return None if entry is None else entry.plots.get(key)

    def put_plot(self, benchmark_id: str, key: str, png: bytes) -> None:
        with self._lock:
            entry = self._benchmarks.get(benchmark_id)
            if entry is not None:
                entry.plots[key] = png

    def get_model(self, model_id: str) -> FittedModel | None:
        with self._lock:
            return self._models.get(model_id)

    def usable(self) -> bool:
        return True
