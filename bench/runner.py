"""The benchmark suite: the service measured side by side with scikit-learn, in one run.

These machines are shared and noisy, so every figure is a ratio of two things measured in
the same run, alternating, with medians over repeats; never an absolute time compared
with a constant. The service runs as users run it: a real uvicorn process on a free
loopback port with a fresh data directory. Each case prints its ratio and its target;
the run exits non-zero when a target is missed, and writes results.md and results.json to
.clusterbench/bench/ (untracked), or to bench/ with ``--record`` (``make bench-record``).
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import sklearn
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import service
from bench.seed_plot import seed_figure
from service import __version__
from service.benchmark import (
    DEFAULT_N_INIT,
    DEFAULT_STRATEGIES,
    BenchmarkParams,
    Strategy,
    run_benchmark,
)
from service.datasets import load_builtin
from service.lazy import WORKER_ONLY
from service.process import ServiceProcess
from service.tasks import run_strategy_from_files as bm_run_strategy
from tests.scaleout import RedisServer

HERE = Path(__file__).resolve().parent
SEED_STRATEGIES = tuple(Strategy(init, DEFAULT_N_INIT[init]) for init in DEFAULT_STRATEGIES)


@dataclass
class Case:
    name: str
    ratio_name: str
    ratio: float
    target: str
    ok: bool
    details: dict[str, Any]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def alternate(
    first: Callable[[int], float], second: Callable[[int], float], repeats: int
) -> tuple[list[float], list[float]]:
    """Measure two things turn about, so that drift on the machine hits both alike."""
    a, b = [], []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(first(i))
            b.append(second(i))
        else:
            b.append(second(i))
            a.append(first(i))
    return a, b


def check(name: str, ratio_name: str, ratio: float, op: str, bound: float, **details: Any) -> Case:
    ok = ratio <= bound if op == "<=" else ratio >= bound
    case = Case(name, ratio_name, round(ratio, 3), f"{op} {bound:g}", ok, details)
    mark = "ok  " if ok else "MISS"
    print(f"[{mark}] {name}: {ratio_name} = {ratio:.3f} (target {op} {bound:g})", flush=True)
    for key, value in details.items():
        print(f"         {key}: {value}", flush=True)
    return case


def npy_bytes(X: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, X)
    return buffer.getvalue()


def blobs(n_samples: int, n_features: int, dtype: type, seed: int) -> np.ndarray:
    """Eight well-separated clusters: KMeans converges alike at every size."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(8, n_features))
    labels = rng.integers(8, size=n_samples)
    X = centres[labels] + rng.normal(size=(n_samples, n_features))
    return np.ascontiguousarray(X, dtype=dtype)


def upload_and_run(client: httpx.Client, X: np.ndarray, content: bytes | None = None) -> None:
    uploaded = client.post(
        "/v1/datasets",
        content=content if content is not None else npy_bytes(X),
        headers={"content-type": "application/x-npy"},
    )
    uploaded.raise_for_status()
    answer = client.post("/v1/benchmarks", json={"dataset": uploaded.json()["id"], "n_clusters": 8})
    answer.raise_for_status()


# -- the cases -------------------------------------------------------------------------------


def digits_cold(client: httpx.Client, repeats: int) -> Case:
    X, y = load_builtin("digits")

    def in_process(i: int) -> float:
        params = BenchmarkParams(
            dataset="-", n_clusters=10, strategies=SEED_STRATEGIES, random_state=1000 + i
        )
        return timed(lambda: run_benchmark(X, y, params))

    def over_http(i: int) -> float:
        def call() -> None:
            answer = client.post("/v1/benchmarks", json={"random_state": 1000 + i})
            answer.raise_for_status()
            assert answer.headers["x-cache"] == "miss"

        return timed(call)

    local, remote = alternate(in_process, over_http, repeats)
    return check(
        "digits, cold, three strategies",
        "HTTP end to end / in-process",
        median(remote) / median(local),
        "<=",
        1.10,
        http_p50_ms=round(median(remote) * 1000, 1),
        in_process_p50_ms=round(median(local) * 1000, 1),
        repeats=repeats,
    )


SWEEP_K = range(2, 21)


def sklearn_sweep(X: np.ndarray, y: np.ndarray, random_state: int) -> list[dict[str, float]]:
    """The sweep as a user would write it with scikit-learn: for each k, the seed's
    pipeline, its fit timed, then every score the service reports."""
    rows = []
    for k in SWEEP_K:
        kmeans = KMeans(n_clusters=k, init="k-means++", n_init=4, random_state=random_state)
        start = time.perf_counter()
        make_pipeline(StandardScaler(), kmeans).fit(X)
        fit_time = time.perf_counter() - start
        labels = kmeans.labels_
        rows.append(
            {
                "k": k,
                "inertia": kmeans.inertia_,
                "fit_time": fit_time,
                "homogeneity": metrics.homogeneity_score(y, labels),
                "completeness": metrics.completeness_score(y, labels),
                "v_measure": metrics.v_measure_score(y, labels),
                "ari": metrics.adjusted_rand_score(y, labels),
                "ami": metrics.adjusted_mutual_info_score(y, labels),
                "silhouette": metrics.silhouette_score(
                    X, labels, sample_size=300, random_state=random_state
                ),
                "davies_bouldin": metrics.davies_bouldin_score(X, labels),
                "calinski_harabasz": metrics.calinski_harabasz_score(X, labels),
            }
        )
    return rows


def sweep_digits(client: httpx.Client, repeats: int) -> Case:
    X, y = load_builtin("digits")

    def in_process(i: int) -> float:
        return timed(lambda: sklearn_sweep(X, y, 2000 + i))

    def over_http(i: int) -> float:
        def call() -> None:
            body = {"k": {"min": SWEEP_K[0], "max": SWEEP_K[-1]}, "random_state": 2000 + i}
            answer = client.post("/v1/sweeps", json=body)
            answer.raise_for_status()
            assert answer.headers["x-cache"] == "miss"

        return timed(call)

    local, remote = alternate(in_process, over_http, repeats)
    return check(
        "sweep, digits, k = 2..20, k-means++, cold",
        "HTTP end to end / scikit-learn loop in-process",
        median(remote) / median(local),
        "<=",
        1.10,
        http_p50_s=round(median(remote), 2),
        in_process_p50_s=round(median(local), 2),
        repeats=repeats,
    )


def hit_latency(client: httpx.Client, repeats: int, name: str = "cache hit") -> Case:
    client.post("/v1/benchmarks", json={}).raise_for_status()

    def hit(_: int) -> float:
        def call() -> None:
            answer = client.post("/v1/benchmarks", json={})
            assert answer.headers["x-cache"] == "hit"

        return timed(call)

    def health(_: int) -> float:
        return timed(lambda: client.get("/healthz"))

    hits, healths = alternate(hit, health, repeats)
    return check(
        name,
        "p50 latency / p50 of /healthz",
        median(hits) / median(healths),
        "<=",
        2.0,
        hit_p50_ms=round(median(hits) * 1000, 3),
        healthz_p50_ms=round(median(healths) * 1000, 3),
        requests_each=repeats,
    )


WRK_POST = """
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_rps(url: str, script: Path | None, seconds: int) -> float:
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk printed no rate:\n{out}")


def redis_hit_latency(repeats: int) -> Case:
    """A cache hit on a replica whose store is Redis (a real redis-server, started here with
    the settings the tests use) against /healthz on the same replica."""
    with tempfile.TemporaryDirectory(prefix="clusterbench-bench-redis-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        with (
            RedisServer(Path(tmp) / "redis") as redis,
            ServiceProcess(data_dir, CLUSTERBENCH_REDIS_URL=redis.url) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            return hit_latency(client, repeats, "cache hit through Redis")


def hit_throughput(server: ServiceProcess, rounds: int, seconds: int) -> Case:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run 'make bench', which installs it")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(WRK_POST)
    script = Path(handle.name)
    try:
        hits, healths = alternate(
            lambda _: wrk_rps(f"{server.url}/v1/benchmarks", script, seconds),
            lambda _: wrk_rps(f"{server.url}/healthz", None, seconds),
            rounds,
        )
    finally:
        script.unlink()
    return check(
        "cache hit throughput",
        "requests/s at 16 connections / the same for /healthz",
        median(hits) / median(healths),
        ">=",
        0.6,
        hit_rps=round(median(hits)),
        healthz_rps=round(median(healths)),
        rounds=rounds,
        seconds_each=seconds,
    )


def plot_first_render(client: httpx.Client, repeats: int) -> Case:
    X, _ = load_builtin("digits")
    seed_figure(X, 10)  # pyplot's first figure pays for font loading: not the method's cost

    def service(i: int) -> float:
        answer = client.post("/v1/benchmarks", json={"random_state": 3000 + i})
        answer.raise_for_status()
        url = answer.json()["plot_url"]

        def render() -> None:
            png = client.get(url)
            png.raise_for_status()
            assert png.content.startswith(b"\x89PNG")

        return timed(render)

    seeds, services = alternate(lambda _: timed(lambda: seed_figure(X, 10)), service, repeats)
    return check(
        "plot, digits, three panels, first render",
        "the seed's mesh method (one panel) / the service",
        median(seeds) / median(services),
        ">=",
        15,
        seed_p50_s=round(median(seeds), 3),
        service_p50_s=round(median(services), 3),
        repeats=repeats,
    )


def upload_200k(client: httpx.Client, repeats: int) -> Case:
    base = blobs(200_000, 64, np.float64, seed=5)
    strategies = SEED_STRATEGIES

    def variant(i: int) -> np.ndarray:
        X = base.copy()
        X[0, 0] += i + 1  # new content each time: no cached dataset or result
        return X

    def in_process(i: int) -> float:
        X = variant(i)
        params = BenchmarkParams(dataset="-", n_clusters=8, strategies=strategies)
        return timed(lambda: run_benchmark(X, None, params))

    def over_http(i: int) -> float:
        content = npy_bytes(variant(100 + i))
        return timed(lambda: upload_and_run(client, base, content))

    local, remote = alternate(in_process, over_http, repeats)
    return check(
        "200k x 64 .npy upload + benchmark",
        "end to end / in-process on an array in memory",
        median(remote) / median(local),
        "<=",
        1.15,
        http_p50_s=round(median(remote), 3),
        in_process_p50_s=round(median(local), 3),
        repeats=repeats,
    )


def onedal_speed(client: httpx.Client, repeats: int) -> Case:
    """k-means++ on 200k x 64 float32 through the service, oneDAL's K-Means against
    scikit-learn's on the same uploaded data (a new random_state each time: no hit)."""
    X = blobs(200_000, 64, np.float32, seed=7)
    uploaded = client.post(
        "/v1/datasets", content=npy_bytes(X), headers={"content-type": "application/x-npy"}
    )
    uploaded.raise_for_status()
    dataset = uploaded.json()["id"]

    def run(implementation: str, seed: int) -> float:
        body = {
            "dataset": dataset,
            "n_clusters": 8,
            "strategies": ["k-means++"],
            "random_state": seed,
            "implementation": implementation,
        }
        return timed(lambda: client.post("/v1/benchmarks", json=body).raise_for_status())

    stock, onedal = alternate(lambda i: run("sklearn", i), lambda i: run("onedal", i), repeats)
    return check(
        "implementation onedal: k-means++ on 200k x 64 float32",
        "onedal / sklearn, over HTTP",
        median(onedal) / median(stock),
        "<=",
        0.5,
        onedal_p50_s=round(median(onedal), 3),
        sklearn_p50_s=round(median(stock), 3),
        repeats=repeats,
    )


def scaling(client: httpx.Client, sizes: list[int], repeats: int) -> Case:
    per_sample: dict[int, float] = {}
    for size in sizes:
        times = []
        for i in range(repeats):
            X = blobs(size, 32, np.float32, seed=7 + i)
            content = npy_bytes(X)
            times.append(timed(lambda c=content, X=X: upload_and_run(client, X, c)))
        per_sample[size] = median(times) / size
    base = per_sample[sizes[0]]
    worst = max(per_sample[s] / base for s in sizes[1:])
    return check(
        "scaling: 20k, 200k, 1M x 32 float32",
        "time per sample / at 20k (worst size)",
        worst,
        "<=",
        1.5,
        **{f"us_per_sample_{s}": round(per_sample[s] * 1e6, 3) for s in sizes},
        **{f"ratio_{s}": round(per_sample[s] / base, 3) for s in sizes},
    )


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


IMPORT_PROBE = """
import sys, time
began = time.perf_counter()
import service.main
seconds = time.perf_counter() - began
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))
print(seconds, ",".join(heavy))
"""


def cold_import(repeats: int) -> Case:
    """``import service.main`` in a fresh interpreter, as every replica starts: from the
    package's bytecode, which ``pip install`` compiles into the image (a checkout with
    PYTHONDONTWRITEBYTECODE set would compile 90 modules anew at every start, 0.1 s)."""
    compileall.compile_dir(Path(service.__file__).parent, quiet=1)
    times: list[float] = []
    heavy = ""
    for _ in range(repeats):
        probe = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE, *WORKER_ONLY],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds, heavy = probe.stdout.split(" ")
        times.append(float(seconds))
    return check(
        "cold start: import service.main",
        "seconds (median of fresh interpreters)",
        median(times),
        "<=",
        0.5,
        worker_only_packages_loaded=heavy.strip() or "none",
        repeats=repeats,
    )


def footprint(server: ServiceProcess) -> list[Case]:
    """The service at rest, ready and warm: the API process's RSS, and the PSS of it and
    every worker (shared pages counted once across the tree, unlike RSS)."""
    root = psutil.Process(server.process.pid if server.process else 0)
    members: dict[str, tuple[float, float]] = {}
    for member in [root, *root.children(recursive=True)]:
        try:
            info = member.memory_full_info()
            name = "api" if member.pid == root.pid else f"{member.pid}:{member.name()}"
            members[name] = (info.rss / 2**20, info.pss / 2**20)
        except psutil.Error:
            continue
    pss = sum(p for _, p in members.values())
    rss = sum(r for r, _ in members.values())
    api_rss, api_pss = members["api"]
    shown = {name: f"{r:.0f}/{p:.0f}" for name, (r, p) in members.items()}
    return [
        check(
            "idle footprint: the service and its workers",
            "PSS of the process tree, MB",
            pss,
            "<=",
            350,
            processes=len(members),
            tree_rss_mb=round(rss, 1),
            rss_pss_mb_per_process=shown,
        ),
        check(
            "idle footprint: the API process",
            "RSS of the API process, MB",
            api_rss,
            "<=",
            120,
            api_pss_mb=round(api_pss, 1),
        ),
    ]


class PeakRSS:
    """The largest RSS of ``server``'s process tree while the block runs, sampled every
    20 ms by a thread; ``idle`` is the RSS when the block began."""

    def __init__(self, server: ServiceProcess) -> None:
        self.root = psutil.Process(server.process.pid if server.process else 0)
        self.idle = self.peak = 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self.idle = self.peak = tree_rss(self.root)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()


def memory(client: httpx.Client, server: ServiceProcess, n_samples: int) -> Case:
    X = blobs(n_samples, 32, np.float32, seed=11)
    content = npy_bytes(X)
    with PeakRSS(server) as rss:
        upload_and_run(client, X, content)
    return check(
        "memory: 1M x 32 float32 benchmark",
        "peak RSS of the server above idle / dataset bytes",
        (rss.peak - rss.idle) / X.nbytes,
        "<=",
        2,
        dataset_mb=round(X.nbytes / 2**20, 1),
        idle_rss_mb=round(rss.idle / 2**20, 1),
        peak_rss_mb=round(rss.peak / 2**20, 1),
    )


def tfidf_like(n_samples: int, n_features: int, density: float, seed: int) -> Any:
    """A sparse CSR matrix shaped like TF-IDF: non-negative, rows of unit l2 norm."""
    from scipy import sparse
    from sklearn.preprocessing import normalize

    rng = np.random.default_rng(seed)
    X = sparse.random(n_samples, n_features, density=density, format="csr", rng=rng)
    return normalize(X)


def sparse_tfidf(client: httpx.Client, n_samples: int, repeats: int) -> list[Case]:
    """A 0.1 %-dense TF-IDF-like matrix (100k x 50k by default) uploaded as save_npz and
    benchmarked (k-means++ and random) through the service, against the same benchmark in
    process, turn about ``repeats`` times (each turn a new matrix: each upload is stored
    anew, as a user's is); and the server's peak RSS against the same benchmark of a
    dense matrix of as many values (n x 50 float64)."""
    import io

    from scipy import sparse

    matrices = [tfidf_like(n_samples, 50_000, 0.001, seed=3 + i) for i in range(repeats)]
    files = []
    for X in matrices:
        buffer = io.BytesIO()
        sparse.save_npz(buffer, X)
        files.append(buffer.getvalue())
    strategies = ["k-means++", "random"]
    uploads: list[float] = []

    def in_process(i: int) -> float:
        params = BenchmarkParams(
            dataset="-", n_clusters=8, strategies=tuple(Strategy(i, 4) for i in strategies)
        )
        return timed(lambda: run_benchmark(matrices[i], None, params))

    def over_http(http: httpx.Client, content: bytes, media_type: str) -> float:
        started = time.perf_counter()
        uploaded = http.post("/v1/datasets", content=content, headers={"content-type": media_type})
        uploaded.raise_for_status()
        uploads.append(time.perf_counter() - started)
        body = {"dataset": uploaded.json()["id"], "n_clusters": 8, "strategies": strategies}
        http.post("/v1/benchmarks", json=body).raise_for_status()
        return time.perf_counter() - started

    media_type = "application/x-scipy-sparse"
    remote, local = alternate(
        lambda i: over_http(client, files[i], media_type), in_process, repeats
    )
    upload_s = uploads[:]

    def peak_above_idle(content: bytes, media_type: str) -> float:
        """MB: each on a server of its own, so that neither inherits the other's freed
        pages (a worker's allocator reuses them, which hides a later peak)."""
        with tempfile.TemporaryDirectory(prefix="clusterbench-bench-") as tmp:
            (Path(tmp) / "data").mkdir()
            with (
                ServiceProcess(Path(tmp) / "data") as fresh,
                httpx.Client(base_url=fresh.url, timeout=600) as http,
                PeakRSS(fresh) as rss,
            ):
                over_http(http, content, media_type)
        return (rss.peak - rss.idle) / 2**20

    sparse_mb = peak_above_idle(files[0], media_type)
    # The dense twin: as many values (50 a row), as a dense n_samples x 50 float64 matrix.
    twin = blobs(n_samples, 50, np.float64, seed=3)
    dense_mb = peak_above_idle(npy_bytes(twin), "application/x-npy")
    return [
        check(
            f"sparse: {n_samples // 1000}k x 50k at 0.1 %, upload + benchmark",
            "end to end / the same benchmark in-process (medians)",
            median(remote) / median(local),
            "<=",
            1.3,
            http_s=[round(t, 3) for t in remote],
            in_process_s=[round(t, 3) for t in local],
            upload_s=[round(t, 3) for t in upload_s],
            nnz=int(matrices[0].nnz),
        ),
        check(
            f"sparse: {n_samples // 1000}k x 50k at 0.1 %, memory",
            "peak RSS above idle / that of a dense n x 50 float64 benchmark",
            sparse_mb / max(dense_mb, 1),
            "<=",
            1.5,
            csr_mb=round(sum(a.nbytes for a in (X.data, X.indices, X.indptr)) / 2**20, 1),
            dense_mb=round(twin.nbytes / 2**20, 1),
            sparse_peak_above_idle_mb=round(sparse_mb, 1),
            dense_peak_above_idle_mb=round(dense_mb, 1),
        ),
    ]


# -- Dask: the same questions on a Dask cluster and on the local pool -------------------------


def digits_over_dask(over_dask: httpx.Client, local: httpx.Client, repeats: int) -> Case:
    def cold(client: httpx.Client, seed: int) -> float:
        def call() -> None:
            answer = client.post("/v1/benchmarks", json={"random_state": seed})
            answer.raise_for_status()
            assert answer.headers["x-cache"] == "miss"

        return timed(call)

    dask_s, local_s = alternate(
        lambda i: cold(over_dask, 5000 + i), lambda i: cold(local, 5000 + i), repeats
    )
    return check(
        "digits, cold, three strategies, over Dask",
        "Dask executor / local pool (HTTP end to end)",
        median(dask_s) / median(local_s),
        "<=",
        1.3,
        dask_p50_ms=round(median(dask_s) * 1000, 1),
        local_p50_ms=round(median(local_s) * 1000, 1),
        repeats=repeats,
    )


CONCURRENT = 16


def burst(client: httpx.Client, first_seed: int) -> tuple[float, list[float]]:
    """16 distinct cold benchmarks at once: the seconds until all are answered, and the
    fit times they report."""
    fits: list[float] = []
    failures: list[str] = []

    def one(seed: int) -> None:
        answer = client.post("/v1/benchmarks", json={"random_state": seed})
        if answer.status_code != 200:
            failures.append(answer.text)
            return
        fits.extend(r["fit_time"] for r in answer.json()["results"])

    threads = [threading.Thread(target=one, args=(first_seed + i,)) for i in range(CONCURRENT)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} of {CONCURRENT} failed: {failures[0]}")
    return seconds, fits


def concurrent_over_dask(
    over_dask: httpx.Client, local: httpx.Client, rounds: int
) -> tuple[Case, dict[str, float]]:
    fits: dict[str, list[float]] = {"dask": [], "local": []}

    def run(name: str, client: httpx.Client, i: int) -> float:
        seconds, times = burst(client, 6000 + 100 * i)
        fits[name].extend(times)
        return CONCURRENT / seconds

    dask_rate, local_rate = alternate(
        lambda i: run("dask", over_dask, i), lambda i: run("local", local, i), rounds
    )
    case = check(
        f"{CONCURRENT} concurrent distinct benchmarks, 2 workers",
        "throughput, 2 Dask workers / local pool of 2",
        median(dask_rate) / median(local_rate),
        ">=",
        0.9,
        dask_benchmarks_per_s=round(median(dask_rate), 3),
        local_benchmarks_per_s=round(median(local_rate), 3),
        rounds=rounds,
    )
    return case, {
        "rate_2": median(dask_rate),
        "fit_s_2": statistics.mean(fits["dask"]),
    }


def task_overhead(address: str, data_dir: Path, repeats: int) -> dict[str, float]:
    """Seconds a no-op task takes through the Dask executor and through the local pool
    (medians, one at a time): the difference is what Dask adds to every task. And
    ``"work"``: the mean seconds of one digits strategy task (fit and scores) through the
    local pool, one at a time, with one thread, as a Dask worker here runs it."""
    import asyncio

    from service.compute import ComputePool
    from service.datasets import DatasetStore
    from service.executors import DaskExecutor, LocalExecutor

    store = DatasetStore(data_dir / "datasets")
    info = store.builtin("digits")
    X_path, y_path = store.files(info)
    params = BenchmarkParams(dataset=info.id, n_clusters=10, strategies=SEED_STRATEGIES)

    async def measure() -> dict[str, float]:
        pool = ComputePool(workers=1, queue_size=0, timeout_s=60, threads_per_worker=1)
        await pool.start()
        dask = DaskExecutor(address, timeout_s=60, queue_size=0)
        await dask.start()
        local = LocalExecutor(pool)
        try:
            times: dict[str, list[float]] = {"dask": [], "local": [], "work": []}
            for name, executor in (("dask", dask), ("local", local)) * repeats:
                began = time.perf_counter()
                await executor.submit(os.getpid)
                times[name].append(time.perf_counter() - began)
            for _ in range(max(2, repeats // 4)):
                for index in range(len(SEED_STRATEGIES)):
                    began = time.perf_counter()
                    await local.submit(bm_run_strategy, X_path, y_path, params, index)
                    times["work"].append(time.perf_counter() - began)
            return {
                "dask": median(times["dask"][1:]),
                "local": median(times["local"][1:]),
                "work": statistics.mean(times["work"][len(SEED_STRATEGIES) :]),
            }
        finally:
            await dask.close()
            pool.close()

    return asyncio.run(measure())


def dask_cases(quick: bool) -> list[Case]:
    """The Dask executor against the local pool, on a real cluster: a scheduler and two
    workers (``dask scheduler``, ``dask worker``), as tests/daskcluster.py starts them."""
    from tests.daskcluster import DaskCluster

    with tempfile.TemporaryDirectory(prefix="clusterbench-dask-") as tmp:
        dask_dir, local_dir = Path(tmp) / "dask", Path(tmp) / "local"
        dask_dir.mkdir()
        local_dir.mkdir()
        queue = str(CONCURRENT)
        with (
            DaskCluster(workers=2) as cluster,
            ServiceProcess(
                dask_dir,
                CLUSTERBENCH_DASK_SCHEDULER=cluster.address,
                CLUSTERBENCH_WORKERS="1",
                CLUSTERBENCH_QUEUE_SIZE=queue,
            ) as dask_server,
            ServiceProcess(
                local_dir, CLUSTERBENCH_WORKERS="2", CLUSTERBENCH_QUEUE_SIZE=queue
            ) as local_server,
            httpx.Client(base_url=dask_server.url, timeout=600) as over_dask,
            httpx.Client(base_url=local_server.url, timeout=600) as local,
        ):
            # The digits stored, and every worker's first fit paid, on both sides.
            for client in (over_dask, local):
                burst(client, 4000)
            overhead = task_overhead(cluster.address, dask_dir, 10 if quick else 40)
            digits = digits_over_dask(over_dask, local, 4 if quick else 10)
            digits.details["task_overhead_ms"] = round(
                (overhead["dask"] - overhead["local"]) * 1000, 2
            )
            digits.details["dask_noop_task_ms"] = round(overhead["dask"] * 1000, 2)
            digits.details["local_noop_task_ms"] = round(overhead["local"] * 1000, 2)
            overhead_case = dask_task_overhead(overhead)
            throughput, two = concurrent_over_dask(over_dask, local, 1 if quick else 3)
            # One worker fewer: the throughput model checked at 1 worker too.
            cluster.workers.pop().terminate()
            cluster.wait_for_workers(1)
            deadline = time.monotonic() + 60
            while len(cluster.client.scheduler_info()["workers"]) > 1:
                assert time.monotonic() < deadline, "the second worker never left"
                time.sleep(0.1)
            seconds, fits = burst(over_dask, 9000)
            o = overhead["dask"] - overhead["local"]
            work = overhead["work"]
            steps = len(SEED_STRATEGIES)  # one task for them all under a burst (run_steps)
            throughput.details.update(
                task_overhead_ms=round(o * 1000, 2),
                task_work_ms=round(work * 1000, 2),
                dask_1_worker_benchmarks_per_s=round(CONCURRENT / seconds, 3),
                mean_fit_s_1_worker=round(statistics.mean(fits), 4),
                mean_fit_s_2_workers=round(two["fit_s_2"], 4),
                # benchmarks/s = W / (steps per benchmark * work per step + overhead), for
                # W workers with a core each (this machine has 2 cores), one task each.
                model_1_worker=round(1 / (steps * work + o), 3),
                model_2_workers=round(2 / (steps * work + o), 3),
            )
            return [digits, overhead_case, throughput]


def dask_task_overhead(overhead: dict[str, float]) -> Case:
    """What the Dask executor adds to every task: a no-op task through it less the same
    through the local pool (task_overhead's medians, one task at a time)."""
    return check(
        "Dask task overhead",
        "ms per task, Dask executor less local pool (no-op task)",
        (overhead["dask"] - overhead["local"]) * 1000,
        "<=",
        5,
        dask_noop_task_ms=round(overhead["dask"] * 1000, 2),
        local_noop_task_ms=round(overhead["local"] * 1000, 2),
    )


# -- 10 million rows (--large): the whole path on data larger than one upload's default -----

LARGE_FEATURES = 64
LARGE_BLOCK_ROWS = 500_000
UPLOAD_CHUNK_BYTES = 8 * 2**20


def write_large_npy(path: Path, n_samples: int) -> None:
    """Eight well-separated clusters (as ``blobs``), n_samples x 64 float32, written to a
    .npy file block by block: never the whole array in this process's memory."""
    rng = np.random.default_rng(13)
    centres = rng.normal(scale=6.0, size=(8, LARGE_FEATURES))
    X = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_samples, LARGE_FEATURES)
    )
    for start in range(0, n_samples, LARGE_BLOCK_ROWS):
        stop = min(start + LARGE_BLOCK_ROWS, n_samples)
        labels = rng.integers(8, size=stop - start)
        X[start:stop] = centres[labels] + rng.normal(size=(stop - start, LARGE_FEATURES))
    X.flush()
    del X


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK_BYTES):
            yield chunk


def large(n_samples: int) -> Case:
    """A .npy of n_samples x 64 float32 (10M: 2.56 GB) uploaded streaming, benchmarked with
    the three strategies and plotted, on a service whose limits admit it; the peak RSS of
    its process tree and the time of each step."""
    with tempfile.TemporaryDirectory(prefix="clusterbench-bench-large-") as tmp:
        data_dir, path = Path(tmp) / "data", Path(tmp) / "large.npy"
        data_dir.mkdir()
        write_large_npy(path, n_samples)
        size = path.stat().st_size
        with (
            ServiceProcess(
                data_dir,
                CLUSTERBENCH_MAX_BODY_BYTES=str(size + 2**20),
                CLUSTERBENCH_MAX_DATASET_BYTES=str(size + 2**20),
                CLUSTERBENCH_DATASETS_MAX_BYTES=str(2 * size),
                CLUSTERBENCH_MAX_CELLS=str(n_samples * LARGE_FEATURES),
                CLUSTERBENCH_TIMEOUT_S="7200",
            ) as server,
            httpx.Client(base_url=server.url, timeout=7200) as client,
            PeakRSS(server) as rss,
        ):
            began = time.perf_counter()
            uploaded = client.post(
                "/v1/datasets",
                content=file_chunks(path),
                headers={"content-type": "application/x-npy", "content-length": str(size)},
            )
            uploaded.raise_for_status()
            upload_s = time.perf_counter() - began
            body = {"dataset": uploaded.json()["id"], "n_clusters": 8}
            answer = client.post("/v1/benchmarks", json=body)
            answer.raise_for_status()
            benchmark_s = time.perf_counter() - began - upload_s
            plot = client.get(answer.json()["plot_url"])
            plot.raise_for_status()
            plot_s = time.perf_counter() - began - upload_s - benchmark_s
        fits = {r["init"]: round(r["fit_time"], 2) for r in answer.json()["results"]}
    return check(
        f"{n_samples // 1_000_000}M x {LARGE_FEATURES} float32 .npy: upload, 3 strategies, plot",
        "peak RSS of the server above idle / dataset bytes",
        (rss.peak - rss.idle) / size,
        "<=",
        2,
        dataset_mb=round(size / 2**20, 1),
        idle_rss_mb=round(rss.idle / 2**20, 1),
        peak_rss_mb=round(rss.peak / 2**20, 1),
        upload_s=round(upload_s, 1),
        benchmark_s=round(benchmark_s, 1),
        fit_s=fits,
        plot_s=round(plot_s, 1),
        plot_bytes=len(plot.content),
    )


# -- the run ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "service": __version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_results(cases: list[Case], info: dict[str, Any], seconds: float, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(
        json.dumps(
            {"machine": info, "seconds": round(seconds), "cases": [asdict(c) for c in cases]},
            indent=2,
        )
        + "\n"
    )
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` on {info['date']}: {info['cpus']} CPUs ({info['cpu_model']}), "
        f"{info['memory_gib']} GiB, Python {info['python']}, clusterbench {info['service']}, "
        f"scikit-learn {info['scikit-learn']}, NumPy {info['numpy']}; {seconds:.0f} s in all.",
        "",
        "| case | ratio | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        lines.append(
            f"| {case.name} | {case.ratio_name} | {case.ratio:.3f} | {case.target} | "
            f"{'yes' if case.ok else '**no**'} |"
        )
    lines += ["", "Details (medians):", ""]
    for case in cases:
        shown = ", ".join(f"{k} {v}" for k, v in case.details.items())
        lines.append(f"- {case.name}: {shown}")
    (folder / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the results to bench/ (tracked) instead of .clusterbench/bench/",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="also the 10M x 64 float32 case (2.56 GB on disk, minutes; 1M with --quick)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    started = time.perf_counter()
    info = machine()
    print(f"machine: {info}", flush=True)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="clusterbench-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        with (
            ServiceProcess(data_dir) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            sizes = [20_000, 200_000] if quick else [20_000, 200_000, 1_000_000]
            # At rest first: before any request has grown a worker.
            plan: list[tuple[str, Callable[[], Case | list[Case]]]] = [
                ("footprint", lambda: footprint(server)),
                ("import", lambda: cold_import(3 if quick else 7)),
                ("digits", lambda: digits_cold(client, 6 if quick else 15)),
                ("hit", lambda: hit_latency(client, 100 if quick else 500)),
                ("redis hit", lambda: redis_hit_latency(100 if quick else 500)),
                (
                    "throughput",
                    lambda: hit_throughput(server, 1 if quick else 3, 2 if quick else 4),
                ),
                ("plot", lambda: plot_first_render(client, 3 if quick else 7)),
                ("upload", lambda: upload_200k(client, 1 if quick else 3)),
                ("onedal", lambda: onedal_speed(client, 1 if quick else 3)),
                (
                    "sparse",
                    lambda: sparse_tfidf(client, 20_000 if quick else 100_000, 1 if quick else 3),
                ),
                ("scaling", lambda: scaling(client, sizes, 1 if quick else 2)),
                ("memory", lambda: memory(client, server, 200_000 if quick else 1_000_000)),
                ("sweep", lambda: sweep_digits(client, 2 if quick else 5)),
            ]
            for key, run in plan:
                if args.only is None or args.only in key:
                    outcome = run()
                    cases.extend(outcome if isinstance(outcome, list) else [outcome])
    if args.only is None or args.only in "dask":
        cases.extend(dask_cases(quick))
    if args.large and (args.only is None or args.only in "large"):
        cases.append(large(1_000_000 if quick else 10_000_000))
    seconds = time.perf_counter() - started
    folder = HERE if args.record else HERE.parent / ".clusterbench" / "bench"
    write_results(cases, info, seconds, folder)
    for case in cases:
        if case.name.startswith(("digits, cold, three strategies, over", f"{CONCURRENT} ")):
            print(f"{case.name}: {case.details}", flush=True)
    print(f"results written to {folder / 'results.md'}", flush=True)
    missed = [c.name for c in cases if not c.ok]
    print(f"{len(cases) - len(missed)} of {len(cases)} targets met in {seconds:.0f} s", flush=True)
    if missed:
        print("missed: " + "; ".join(missed), file=sys.stderr)
    return 1 if missed else 0
