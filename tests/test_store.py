"""The persistent result store: round trips, corruption, eviction, leases."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.benchmark import FittedModel
from service.store import ResultStore, StoredBenchmark, model_from_bytes, model_to_bytes

MIB = 1024 * 1024


def make_store(tmp_path: Path, **kwargs: int) -> ResultStore:
    options = {"max_bytes": 64 * MIB, "memory_bytes": MIB, **kwargs}
    return ResultStore(tmp_path / "cache.sqlite3", **options)


def make_model(seed: int = 0, scaled: bool = True) -> FittedModel:
    rng = np.random.default_rng(seed)
    return FittedModel(
        init="k-means++",
        n_clusters=3,
        n_features=4,
        cluster_centers=rng.normal(size=(3, 4)),
        scaler_mean=rng.normal(size=4) if scaled else None,
        scaler_scale=rng.uniform(1, 2, size=4) if scaled else None,
        inertia=12.5,
        n_iter=7,
    )


def make_entry(index: int, *, padding: int = 0, models: int = 1) -> StoredBenchmark:
    benchmark_id = f"{index:064x}"
    body = orjson.dumps({"id": benchmark_id, "cached": False, "pad": "x" * padding})
    return StoredBenchmark.from_body(
        benchmark_id, body, {f"{index:063x}{m}": make_model(index * 10 + m) for m in range(models)}
    )


def test_round_trip_and_hit_body(tmp_path: Path) -> None:
    # Check that a stored benchmark reads back byte for byte, from a fresh store too.
    store = make_store(tmp_path)
    entry = make_entry(1)
    store.put(entry)
    again = make_store(tmp_path).get(entry.id)
    assert again is not None
    assert again.body == entry.body
    assert orjson.loads(again.hit_body)["cached"] is True
    model_id = next(iter(entry.models))
    model = make_store(tmp_path).get_model(model_id)
    assert model is not None
    np.testing.assert_array_equal(model.cluster_centers, entry.models[model_id].cluster_centers)
    assert store.get("f" * 64) is None


@pytest.mark.parametrize("scaled", [True, False])
def test_model_bytes_round_trip(scaled: bool) -> None:
    # Check that a model survives .npz bytes exactly, with or without a scaler.
    model = make_model(3, scaled)
    back = model_from_bytes(model_to_bytes(model))
    assert back.init == model.init
    assert (back.n_clusters, back.n_features, back.n_iter) == (3, 4, 7)
    assert back.inertia == model.inertia
    np.testing.assert_array_equal(back.cluster_centers, model.cluster_centers)
    if scaled:
        np.testing.assert_array_equal(back.scaler_mean, model.scaler_mean)
        np.testing.assert_array_equal(back.scaler_scale, model.scaler_scale)
    else:
        assert back.scaler_mean is None


def test_pickled_model_is_refused(tmp_path: Path) -> None:
    # Check that a stored model holding a pickled object is never unpickled.
    buffer = io.BytesIO()
    np.savez(buffer, init=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        model_from_bytes(buffer.getvalue())


def test_corrupt_rows_are_misses(tmp_path: Path) -> None:
    # Check that a body, model or plot whose bytes changed on disk reads as absent.
    store = make_store(tmp_path)
    entry = make_entry(2)
    store.put(entry)
    store.put_plot(entry.id, "all", b"\x89PNG fake")
    model_id = next(iter(entry.models))
    with sqlite3.connect(tmp_path / "cache.sqlite3") as db:
        db.execute("UPDATE benchmarks SET body = ?", (b"garbage",))
        db.execute("UPDATE plots SET png = ?", (b"garbage",))
        db.execute("UPDATE models SET data = ?", (b"garbage",))
    fresh = make_store(tmp_path)
    assert fresh.get_plot(entry.id, "all") is None
    assert fresh.get_model(model_id) is None
    assert fresh.get(entry.id) is None
    assert fresh.corrupt_entries == 3
    fresh.put(entry)
    assert fresh.get(entry.id) is not None


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_database_is_set_aside(tmp_path: Path, damage: str) -> None:
    # Check that a database file filled with garbage or cut short is moved aside and an
    # empty store takes its place, at start-up and under a live store.
    store = make_store(tmp_path)
    for i in range(20):
        store.put(make_entry(i, padding=5000))
    store.close()
    path = tmp_path / "cache.sqlite3"
    data = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 4096 if damage == "garbage" else data[: len(data) // 3])

    reopened = make_store(tmp_path)
    assert reopened.usable()
    assert reopened.get(make_entry(1).id) is None
    reopened.put(make_entry(99))
    assert reopened.get(make_entry(99).id) is not None
    assert list(tmp_path.glob("cache.sqlite3.corrupt-*"))

    # Now damage it under the open store: reads answer None, never raise.
    path.write_bytes(b"\xffnot a database" * 4096)
    assert reopened.get(make_entry(50).id) is None
    reopened.put(make_entry(51))
    assert reopened.usable()


def test_eviction_keeps_the_bound_and_takes_models_along(tmp_path: Path) -> None:
    # Check that the store stays under max_bytes, evicting least recently used entries
    # with their plots and their models.
    store = make_store(tmp_path, max_bytes=60_000, memory_bytes=0)
    entries = [make_entry(i, padding=9000) for i in range(12)]
    for entry in entries:
        store.put(entry)
        store.put_plot(entry.id, "all", b"p" * 1000)
        assert store.total_bytes() <= 60_000
        store.touch(entries[0].id)  # the first stays the most recently used
    assert store.get(entries[0].id) is not None
    assert store.get(entries[1].id) is None
    assert store.get_plot(entries[1].id, "all") is None
    assert store.get_model(next(iter(entries[1].models))) is None
    assert store.get(entries[-1].id) is not None
    with sqlite3.connect(tmp_path / "cache.sqlite3") as db:
        orphans = db.execute(
            "SELECT COUNT(*) FROM models WHERE id NOT IN (SELECT model_id FROM benchmark_models)"
        ).fetchone()[0]
    assert orphans == 0


def test_shared_models_outlive_one_benchmark(tmp_path: Path) -> None:
    # Check that a model two benchmarks share stays while one of them remains.
    store = make_store(tmp_path, max_bytes=10**9, memory_bytes=0)
    shared = make_model(5)
    first = StoredBenchmark.from_body("a" * 64, orjson.dumps({"id": "a" * 64}), {"m" * 64: shared})
    second = StoredBenchmark.from_body("b" * 64, orjson.dumps({"id": "b" * 64}), {"m" * 64: shared})
    store.put(first)
    store.put(second)
    store._delete(first.id)
    assert store.get_model("m" * 64) is not None
    store._delete(second.id)
    assert store.get_model("m" * 64) is None


def test_leases(tmp_path: Path) -> None:
    # Check that one owner holds a lease at a time, across store instances, until it is
    # released or expires.
    one, two = make_store(tmp_path), make_store(tmp_path)
    assert one.try_lease("job", "one", ttl_s=60)
    assert not two.try_lease("job", "two", ttl_s=60)
    one.release("job", "one")
    assert two.try_lease("job", "two", ttl_s=-1)  # already expired
    assert one.try_lease("job", "one", ttl_s=60)


def test_unopenable_path_is_not_ready(tmp_path: Path) -> None:
    # Check that a store whose file cannot be opened reports itself unusable, and that
    # nothing at that path is moved.
    blocker = tmp_path / "cache.sqlite3"
    blocker.mkdir()
    store = make_store(tmp_path)
    assert not store.usable()
    assert store.get("a" * 64) is None
    store.put(make_entry(1))
    assert blocker.is_dir()


def test_a_plot_stored_twice_is_counted_once(tmp_path: Path) -> None:
    # Check that two processes storing the same plot do not inflate the entry's size.
    store = make_store(tmp_path)
    entry = make_entry(7)
    store.put(entry)
    before = store.total_bytes()
    store.put_plot(entry.id, "all", b"p" * 500)
    store.put_plot(entry.id, "all", b"p" * 500)
    assert store.total_bytes() == before + 500
