"""Shared bytes, private claims: what one tenant does never costs another its data,
names or room, and what a tenant stores is counted against its quota when it is stored."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.datasets import DatasetInfo, DatasetStore
from service.errors import QuotaExceededError
from service.process import ServiceProcess
from service.tenants import Tenancy, TenantStore
from tests.helpers import A, B, csv, start_tenants_server, upload

pytestmark = pytest.mark.server


def used(server: ServiceProcess, tenant: str) -> int:
    """The bytes ``tenant`` holds, as the server's claims record them."""
    store = TenantStore(server.data_dir / "tenants.sqlite3")
    try:
        return store.used_bytes(tenant)
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_roll_back_never_removes_bytes_another_tenant_is_claiming(tmp_path: Path) -> None:
    # Check the race of two tenants sending the same numbers, driven step by step: B's
    # store finds the bytes A just stored, A is over its quota and rolls back (nobody
    # holds the bytes yet, so they go), then B claims: B's claim stores them again, and
    # B's dataset is there to read.
    datasets = DatasetStore(tmp_path / "datasets")
    store = TenantStore(tmp_path / "tenants.sqlite3")
    tenancy = Tenancy(store, datasets, quota_bytes=10_000)
    store.claim("alice", "dataset", "f" * 64, nbytes=9_999)  # alice is at her quota
    X = np.arange(40.0).reshape(20, 2)

    info, created = datasets.put(X, None, name=None, format="csv")  # alice's store
    assert created
    assert not datasets.put(X, None, name=None, format="csv")[1]  # bob's finds it
    with pytest.raises(QuotaExceededError):
        await tenancy.claim_dataset("alice", info.id)
    stored_again = []

    async def store_again() -> None:
        stored_again.append(datasets.put(X, None, name=None, format="csv")[1])

    assert await tenancy.claim_dataset("bob", info.id, store_again=store_again)
    assert stored_again == [True]
    assert datasets.get(info.id).n_samples == 20
    assert store.holds("bob", "dataset", info.id)
    assert not store.holds("alice", "dataset", info.id)

    store.close()


QUOTA = 20_000


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    server = start_tenants_server(
        tmp_path_factory,
        "claims-quota",
        CLUSTERBENCH_TENANT_QUOTA_BYTES=str(QUOTA),
        CLUSTERBENCH_QUEUE_SIZE="8",
    )
    yield server
    server.stop()


def test_another_tenants_roll_back_never_deletes_a_fresh_upload(
    quota_server: ServiceProcess,
) -> None:
    # Check, with real requests at the same moment, that when A (at her quota) and B send
    # the same bytes, B's 201 is always a dataset B can read and benchmark.
    with httpx.Client(base_url=quota_server.url, timeout=120) as http:
        filler = upload(http, A, csv(600, shift=-50.0))  # about 15 KB of A's 20 KB
        assert filler.status_code == 201, filler.text
        for trial in range(12):
            data = csv(300, shift=float(trial))  # about 7 KB: past A's quota, not B's
            with ThreadPoolExecutor(2) as pool:
                hers, his = pool.map(upload, (http, http), (A, B), (data, data))
            assert hers.status_code == 403, hers.text
            assert his.status_code == 201, his.text
            dataset_id = his.json()["id"]
            assert http.get(f"/v1/datasets/{dataset_id}", headers=B).status_code == 200
            run = run_as(http, B, dataset_id)
            assert run.status_code == 200, (trial, run.text)
            # B makes room for the next trial.
            assert http.delete(f"/v1/benchmarks/{run.json()['id']}", headers=B).status_code == 204
            assert http.delete(f"/v1/datasets/{dataset_id}", headers=B).status_code == 204


def test_concurrent_results_and_plots_are_counted_when_stored(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Check that benchmarks finishing together cannot each pass the quota check and
    # together pass the quota, and that a plot is counted when it is stored: past the
    # quota it is 403, and the tenant never holds more than its quota.
    server = start_tenants_server(
        tmp_path_factory,
        "claims-overshoot",
        CLUSTERBENCH_TENANT_QUOTA_BYTES="5000",
        CLUSTERBENCH_QUEUE_SIZE="8",
        # The quota is what is tested here: the whole pool is this one tenant's.
        CLUSTERBENCH_TENANT_POOL_SHARE="1",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            made = upload(http, A, csv(40))
            assert made.status_code == 201, made.text
            dataset_id = made.json()["id"]

            def run(seed: int) -> httpx.Response:
                body = {"dataset": dataset_id, "strategies": ["random"], "random_state": seed}
                return http.post("/v1/benchmarks", json=body, headers=A)

            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(run, range(6)))
            statuses = sorted(a.status_code for a in answers)
            assert set(statuses) <= {200, 403}, [a.text for a in answers]
            assert 403 in statuses
            assert used(server, "alice") <= 5000
            done = next(a.json()["id"] for a in answers if a.status_code == 200)

            plot = http.get(f"/v1/benchmarks/{done}/plot.png", headers=A)
            assert plot.status_code == 403, plot.status_code
            assert plot.json()["type"].endswith("quota-exceeded")
            assert used(server, "alice") <= 5000
    finally:
        server.stop()


def run_as(http: httpx.Client, headers: dict[str, str], dataset_id: str) -> httpx.Response:
    return http.post(
        "/v1/benchmarks",
        json={"dataset": dataset_id, "strategies": ["random"], "random_state": 0},
        headers=headers,
    )


@pytest.fixture(scope="module")
def inline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    server = start_tenants_server(
        tmp_path_factory, "claims-inline", CLUSTERBENCH_INLINE_MAX_BYTES="3000"
    )
    yield server
    server.stop()


def test_names_and_columns_belong_to_each_tenants_claim(inline_server: ServiceProcess) -> None:
    # Check that B, sending the numbers A uploaded as "alice-secret-project.csv" with her
    # own column names, is answered, shown and listed under its own name and columns,
    # never A's, and A still sees hers.
    numbers = csv(20, shift=300.0).split(b"\n", 1)[1]
    alices = b"revenue,margin,label\n" + numbers
    bobs = b"x,y,label\n" + numbers

    def send(headers: dict[str, str], name: str, data: bytes) -> httpx.Response:
        return http.post(
            "/v1/datasets?label_column=label",
            files={"file": (name, io.BytesIO(data), "text/csv")},
            headers=headers,
        )

    with httpx.Client(base_url=inline_server.url, timeout=60) as http:
        hers = send(A, "alice-secret-project.csv", alices)
        assert hers.status_code == 201, hers.text
        his = send(B, "mine.csv", bobs)
        assert his.status_code == 201, his.text
        dataset_id = his.json()["id"]
        assert dataset_id == hers.json()["id"]
        for answer in (his, http.get(f"/v1/datasets/{dataset_id}", headers=B)):
            assert answer.json()["name"] == "mine.csv"
            assert answer.json()["feature_names"] == ["x", "y"]
        listed = http.get("/v1/datasets", headers=B).json()["datasets"]
        assert [d["name"] for d in listed if d["id"] == dataset_id] == ["mine.csv"]
        assert b"alice" not in http.get("/v1/datasets", headers=B).content
        mine = http.get(f"/v1/datasets/{dataset_id}", headers=A).json()
        assert (mine["name"], mine["feature_names"]) == (
            "alice-secret-project.csv",
            ["revenue", "margin"],
        )
        run = run_as(http, B, dataset_id)
        assert run.status_code == 200
        assert b"alice" not in run.content
        assert b"revenue" not in run.content


def test_a_tables_column_names_belong_to_each_tenants_claim(
    inline_server: ServiceProcess,
) -> None:
    # Check that a table's columns (names of numeric, categorical, label and weight
    # columns) are each tenant's own: B, sending A's cells under its own header, shares
    # A's bytes (the id is the data's) but is shown its own names, and none of A's reach
    # B's description, listing, 422 (missing cells) or benchmark, model and profiles, nor
    # the shared bytes on disk. The categories are the data's: both see them.
    rows = [
        f"{'' if i == 3 else 10 + i % 5},{['north', 'south'][i % 2]},{1 + i % 3},{i % 2}"
        for i in range(24)
    ]
    alices = (
        "secret_revenue,secret_region,secret_weight,secret_label\n" + "\n".join(rows)
    ).encode()
    bobs = ("a,b,w,label\n" + "\n".join(rows)).encode()

    def send(headers: dict[str, str], data: bytes, weight: str, label: str) -> httpx.Response:
        return http.post(
            f"/v1/datasets?label_column={label}&weight_column={weight}",
            content=data,
            headers={**headers, "Content-Type": "text/csv"},
        )

    with httpx.Client(base_url=inline_server.url, timeout=60) as http:
        hers = send(A, alices, "secret_weight", "secret_label")
        assert hers.status_code == 201, hers.text
        his = send(B, bobs, "w", "label")
        assert his.status_code == 201, his.text
        dataset_id = his.json()["id"]
        assert dataset_id == hers.json()["id"]
        theirs = [
            {"name": "a", "kind": "numeric", "missing": 1},
            {"name": "b", "kind": "categorical", "missing": 0},
            {"name": "w", "kind": "weight", "missing": 0},
            {"name": "label", "kind": "label", "missing": 0},
        ]
        for answer in (his, http.get(f"/v1/datasets/{dataset_id}", headers=B)):
            assert answer.json()["columns"] == theirs
        assert http.get(f"/v1/datasets/{dataset_id}", headers=A).json()["columns"] == [
            {**c, "name": f"secret_{n}"}
            for c, n in zip(theirs, ["revenue", "region", "weight", "label"], strict=True)
        ]
        refused = http.post("/v1/benchmarks", json={"dataset": dataset_id}, headers=B)
        assert refused.status_code == 422
        run = http.post(
            "/v1/benchmarks",
            json={"dataset": dataset_id, "strategies": ["random"], "missing": "impute"},
            headers=B,
        )
        assert run.status_code == 200, run.text
        model_id = run.json()["results"][0]["model_id"]
        seen = [
            http.get("/v1/datasets", headers=B).content,
            refused.content,
            run.content,
            http.get(f"/v1/models/{model_id}", headers=B).content,  # with its profiles
        ]
        for content in seen:
            assert b"secret" not in content, content
        assert b"north" in seen[-1]
        meta = (inline_server.data_dir / "datasets" / dataset_id / "meta.json").read_bytes()
        assert b"secret" not in meta
        assert b"north" in meta


def test_inline_data_is_bounded_and_evicted_per_tenant(inline_server: ServiceProcess) -> None:
    # Check that B's stream of inline requests evicts only B's own least recently used
    # inline data (within CLUSTERBENCH_INLINE_MAX_BYTES, 3000 here), never A's.
    def inline(shift: float) -> dict[str, object]:
        X = [[shift + i * 0.5, (i % 3) * 1.0] for i in range(30)]  # 30 x 2: ~0.6 KB stored
        return {"X": X, "n_clusters": 2, "strategies": ["random"]}

    with httpx.Client(base_url=inline_server.url, timeout=60) as http:
        hers = http.post("/v1/benchmarks", json=inline(1000.0), headers=A)
        assert hers.status_code == 200, hers.text
        her_data = hers.json()["dataset"]["id"]
        his = []
        for k in range(8):
            answer = http.post("/v1/benchmarks", json=inline(2000.0 + 100 * k), headers=B)
            assert answer.status_code == 200, answer.text
            his.append(answer.json()["dataset"]["id"])
        assert http.get(f"/v1/datasets/{her_data}", headers=A).status_code == 200
        # Kept, but not listed: data sent inline is not an upload.
        listed = {d["id"] for d in http.get("/v1/datasets", headers=A).json()["datasets"]}
        assert her_data not in listed
        # B's oldest went, its newest stayed; what B holds inline stays within the bound.
        assert http.get(f"/v1/datasets/{his[0]}", headers=B).status_code == 404
        assert http.get(f"/v1/datasets/{his[-1]}", headers=B).status_code == 200
        kept = [d for d in his if http.get(f"/v1/datasets/{d}", headers=B).status_code == 200]
        assert 1 <= len(kept) < len(his)
        store = TenantStore(inline_server.data_dir / "tenants.sqlite3")
        try:
            assert sum(n for _, n in store.inline_held("bob")) <= 3000
        finally:
            store.close()


def test_uploads_without_quotas_are_bounded_in_expansion_and_in_total(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Check, with no key and no quota (the default), that a small compressed .npz or
    # Parquet file that would expand past CLUSTERBENCH_MAX_EXPANSION is 413 before it is
    # decoded, and that uploads past CLUSTERBENCH_DATASETS_MAX_BYTES in all are 507 until
    # something is deleted.
    data_dir = tmp_path_factory.mktemp("claims-open") / "data"
    data_dir.mkdir()
    server = ServiceProcess(
        data_dir, CLUSTERBENCH_WORKERS="1", CLUSTERBENCH_DATASETS_MAX_BYTES="20000"
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            zeros = np.zeros((20_000, 10))  # 1.6 MB stored
            npz = io.BytesIO()
            np.savez_compressed(npz, X=zeros)
            parquet = io.BytesIO()
            table = pa.table({f"f{j}": zeros[:, j] for j in range(10)})
            pq.write_table(table, parquet, compression="zstd")
            for media_type, body in (
                ("application/x-npz", npz.getvalue()),
                ("application/vnd.apache.parquet", parquet.getvalue()),
            ):
                assert len(body) * 100 < zeros.nbytes
                refused = http.post(
                    "/v1/datasets", content=body, headers={"Content-Type": media_type}
                )
                assert refused.status_code == 413, (media_type, refused.text)
                assert "CLUSTERBENCH_MAX_EXPANSION" in refused.json()["detail"]

            def send(shift: float) -> httpx.Response:
                return upload(http, {}, csv(300, shift=shift))  # about 7.5 KB stored

            first, second = send(0.0), send(1.0)
            assert (first.status_code, second.status_code) == (201, 201)
            full = send(2.0)
            assert full.status_code == 507, full.text
            assert full.headers["content-type"] == "application/problem+json"
            assert "CLUSTERBENCH_DATASETS_MAX_BYTES" in full.json()["detail"]
            assert send(0.0).status_code == 200  # already stored: it fits
            assert http.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
            assert send(2.0).status_code == 201
    finally:
        server.stop()


def test_data_removed_between_the_look_and_the_read_is_stored_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Check that the same numbers sent while their last holder lets go of them (another
    # tenant's roll-back removes them between put's look and its read) are stored anew:
    # the upload of the tenant sending them answered 404 for data it had just sent.
    datasets = DatasetStore(tmp_path / "datasets")
    X = np.arange(40.0).reshape(20, 2)
    info, _ = datasets.put(X, None, name=None, format="csv")
    read = DatasetStore.get
    removed: list[str] = []

    def removed_first(self: DatasetStore, dataset_id: str) -> DatasetInfo:
        if not removed:
            removed.append(dataset_id)
            self.delete(dataset_id)  # the roll-back, at the worst moment
        return read(self, dataset_id)

    monkeypatch.setattr(DatasetStore, "get", removed_first)
    again, created = datasets.put(X, None, name=None, format="csv")
    assert removed == [info.id]
    assert (again.id, created) == (info.id, True)
    assert read(datasets, info.id).n_samples == 20
