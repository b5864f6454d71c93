"""The generic runtime alone, with no kind of question: a document computed once by two
runtimes (two processes' worth) sharing one store, under the one lease loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from service.compute import ComputePool, InTurn
from service.datasets import DatasetInfo
from service.errors import ComputeFailedError
from service.executors import Handle, LocalExecutor
from service.runtime import BATCH_S, Progress, Runtime, Step
from service.store import ResultStore

T = TypeVar("T")

MIB = 1 << 20


class WatchedStore(ResultStore):
    """The SQLite store, telling when it refused a lease (its owner's rival waits)."""

    refused: asyncio.Event
    loop: asyncio.AbstractEventLoop

    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        taken = super().try_lease(key, owner, ttl_s)
        if not taken:
            self.loop.call_soon_threadsafe(self.refused.set)
        return taken


@pytest.mark.anyio
async def test_two_runtimes_on_one_store_compute_a_document_once(tmp_path: Path) -> None:
    # Check that of two runtimes on one data directory asked the same document at once,
    # one computes it under its lease, telling its follower the steps, and the other
    # waits for the lease and answers the stored bytes.
    pool = ComputePool(workers=1, queue_size=4, timeout_s=60.0, warm=False)
    stores = [
        WatchedStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0) for _ in range(2)
    ]
    for store in stores:
        store.refused, store.loop = asyncio.Event(), asyncio.get_running_loop()
    first, second = (Runtime(store, pool, tmp_path / "tmp") for store in stores)
    started, go = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def compute(report: Progress) -> tuple[bytes, bytes]:
        calls.append("computed")
        report(0, 1, "drawing")
        started.set()
        await go.wait()
        return b'{"answer": 42}', b'{"answer": 42}'  # answered now, stored

    heard: list[tuple[int, int, str]] = []
    try:
        task = first.document_computation("doc", "k", compute, lambda *step: heard.append(step))
        await asyncio.wait_for(started.wait(), 30)
        assert heard == [(0, 1, "drawing")]
        # The first holds the lease: the second is refused it, and waits.
        waiting = asyncio.create_task(second.get_or_compute_document("doc", "k", compute))
        await asyncio.wait_for(stores[1].refused.wait(), 30)
        assert not waiting.done()
        go.set()
        assert await asyncio.wait_for(task, 30) == (b'{"answer": 42}', False)
        assert await asyncio.wait_for(waiting, 30) == (b'{"answer": 42}', True)
        assert calls == ["computed"]
        # The lease was released: anyone may take it now.
        assert second.results.try_lease("doc:k", second.owner, 60)
    finally:
        pool.close()


class CountingExecutor(LocalExecutor):
    """The local pool, noting how many steps each task it is given holds, and the most
    tasks it had running at once: in all, and by their (first) step's function."""

    def __init__(self, pool: ComputePool) -> None:
        super().__init__(pool)
        self.sizes: list[int] = []
        self.running = self.peak = 0
        self.running_of: collections.Counter[str] = collections.Counter()
        self.peak_of: collections.Counter[str] = collections.Counter()

    def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> Handle[T]:
        self.sizes.append(len(fn.calls) if isinstance(fn, InTurn) else 1)
        name = (fn.calls[0][0] if isinstance(fn, InTurn) else fn).__name__
        task = super().submit(fn, *args, timeout_s=timeout_s)
        self.running += 1
        self.running_of[name] += 1
        self.peak = max(self.peak, self.running)
        self.peak_of[name] = max(self.peak_of[name], self.running_of[name])

        async def counted() -> T:
            # Counted out before its awaiter can see it done: a done-callback ran after
            # the awaiter when two tasks ended together, and it then submitted two more
            # while the finished one still counted (a peak of 3 on two workers).
            try:
                return await task
            finally:
                self.running -= 1
                self.running_of[name] -= 1

        return Handle(asyncio.ensure_future(counted()))


def square_after(seconds: float, n: int) -> dict[str, float]:
    """A step for a worker: ``n`` squared, after ``seconds`` of work."""
    time.sleep(seconds)
    return {"n": n, "square": n * n, "fit_time": seconds}


def exit_at(n: int) -> dict[str, float]:
    """A step for a worker that dies at ``n == 3``."""
    if n == 3:
        os._exit(3)
    return square_after(0.001, n)


@contextlib.asynccontextmanager
async def stepping(
    tmp_path: Path, workers: int = 1
) -> AsyncIterator[tuple[Runtime, CountingExecutor]]:
    """A runtime on a pool of ``workers``, its executor noting the tasks."""
    pool = ComputePool(
        workers=workers, queue_size=0, timeout_s=60.0, threads_per_worker=1, warm=False
    )
    executor = CountingExecutor(pool)
    store = ResultStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0)
    try:
        yield Runtime(store, pool, tmp_path / "tmp", executor=executor), executor
    finally:
        pool.close()


DATASET = DatasetInfo(
    id="0" * 64, name=None, n_samples=1, n_features=1, has_labels=False, n_labels=None,
    dtype="float64", format="npy",
)  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("seconds", "most_tasks"), [(0.001, 11), (BATCH_S, 12)])
async def test_quick_steps_share_a_task_and_slow_ones_do_not(
    tmp_path: Path, seconds: float, most_tasks: int
) -> None:
    # Check that a computation's quick steps go to the workers several to a task (each
    # task a round trip: 1-2 ms on the local pool, 9-19 ms on Dask; a digits sweep was 19
    # tasks), at most twice as many as the task before, their results in order and each
    # its own, progress heard at each task's start; and that steps of BATCH_S or more
    # keep a task each.
    steps = [Step(f"n={n}", square_after, (seconds, n)) for n in range(12)]
    heard: list[tuple[int, int, str]] = []
    async with stepping(tmp_path) as (runtime, executor):
        results = await runtime.run_steps(
            DATASET,
            steps,
            lambda result: result["fit_time"],
            lambda *step: heard.append(step),
            alike="",
        )
    assert results == [square_after(seconds, n) for n in range(12)]
    assert len(executor.sizes) == len(heard) <= most_tasks
    assert sum(executor.sizes) == 12
    assert executor.sizes[0] == 1
    assert all(now <= 2 * before for before, now in itertools.pairwise(executor.sizes))
    assert heard[0] == (0, 12, "n=0")
    assert [done for done, _, _ in heard] == sorted({done for done, _, _ in heard})
    assert all(stage == f"n={done}" and total == 12 for done, total, stage in heard)


@pytest.mark.anyio
async def test_quick_steps_share_a_task_while_other_work_waits_them_in_the_queue(
    tmp_path: Path,
) -> None:
    # Check that a task's pace is its steps' time in the worker, not its wait in the
    # queue: beside another computation whose steps hold the one worker 0.2 s each, every
    # task of a quick computation waits about 0.2 s, and its steps still share tasks
    # (timed by the task's wall time, they kept one each while the other ran: 11 tasks of 12 steps).
    pool = ComputePool(workers=1, queue_size=1, timeout_s=60.0, threads_per_worker=1, warm=False)
    quick_executor = CountingExecutor(pool)
    store = ResultStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0)
    slow = Runtime(store, pool, tmp_path / "tmp", executor=LocalExecutor(pool))
    quick = Runtime(store, pool, tmp_path / "tmp", executor=quick_executor)
    slow_steps = [Step(f"slow={n}", square_after, (0.2, n)) for n in range(8)]
    quick_steps = [Step(f"n={n}", square_after, (0.001, n)) for n in range(12)]
    try:
        _, results = await asyncio.gather(
            slow.run_steps(DATASET, slow_steps, lambda r: r["fit_time"], lambda *_: None, alike=""),
            quick.run_steps(
                DATASET, quick_steps, lambda r: r["fit_time"], lambda *_: None, alike=""
            ),
        )
    finally:
        pool.close()
    assert results == [square_after(0.001, n) for n in range(12)]
    assert sum(quick_executor.sizes) == 12
    assert len(quick_executor.sizes) <= 5, quick_executor.sizes


def meet(folder: str, me: int, other: int) -> int:
    """A step for a worker: say it is here, then wait (10 s at most) for ``other`` to
    say so too. Its process id when they met, 0 when ``other`` never came: two steps
    meet only when they run at once."""
    Path(folder, str(me)).touch()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(folder, str(other)).exists():
            return os.getpid()
        time.sleep(0.005)
    return 0


@pytest.mark.anyio
@pytest.mark.parametrize(("n_samples", "lanes"), [(1797, 2), (1_000_000, 1)])
async def test_small_data_s_steps_run_on_every_worker_at_once(
    tmp_path: Path, n_samples: int, lanes: int
) -> None:
    # Check that the steps of a question on small data (fitted on one thread each) run
    # on the pool's two workers at once, their results in order (the digits benchmark's
    # three strategies took three fits' time on one worker while the other idled), and
    # that a large question's steps, whose fits use every thread of their worker, go
    # one after another.
    pool = ComputePool(workers=2, queue_size=0, timeout_s=60.0, threads_per_worker=1, warm=False)
    executor = CountingExecutor(pool)
    runtime = Runtime(
        ResultStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0),
        pool,
        tmp_path / "tmp",
        executor=executor,
    )
    dataset = dataclasses.replace(DATASET, n_samples=n_samples, n_features=64)
    try:
        if lanes == 2:
            steps = [Step(f"meet {n}", meet, (str(tmp_path), n, 1 - n)) for n in range(2)]
            met = await runtime.run_steps(dataset, steps, lambda _: 0.0, lambda *_: None, alike="")
            assert 0 not in met
            assert met[0] != met[1]
        steps = [Step(f"n={n}", square_after, (0.05, n)) for n in range(4)]
        results = await runtime.run_steps(
            dataset, steps, lambda r: r["fit_time"], lambda *_: None, alike=""
        )
    finally:
        pool.close()
    assert results == [square_after(0.05, n) for n in range(4)]
    assert executor.peak == lanes


@pytest.mark.anyio
async def test_a_heavier_step_is_not_batched_with_light_ones(tmp_path: Path) -> None:
    # Check that a step whose weight says it costs far more than the steps before it (a
    # sweep's steps grow with k) gets a task of its own, however quick the ones before.
    steps = [Step(f"n={n}", square_after, (0.001, n)) for n in range(7)]
    steps.append(Step("heavy", square_after, (0.3, 7), weight=1000))
    async with stepping(tmp_path) as (runtime, executor):
        results = await runtime.run_steps(
            DATASET, steps, lambda r: r["fit_time"], lambda *_: None, alike=""
        )
    assert [r["n"] for r in results] == list(range(8))
    assert executor.sizes[-1] == 1
    assert len(executor.sizes) < 8


@pytest.mark.anyio
async def test_a_worker_dying_in_a_shared_task_is_a_retryable_failure() -> None:
    # Check that a worker that dies while running several steps in one task is reported
    # as it is for a task of one step (a retryable 503, the worker replaced), not as an
    # error of the report itself (a task of several steps has no __qualname__ to log).
    pool = ComputePool(workers=1, queue_size=0, timeout_s=60.0, threads_per_worker=1, warm=False)
    try:
        shared = InTurn(((square_after, (0.001, 1)), (exit_at, (3,))))
        with pytest.raises(ComputeFailedError, match="died"):
            await pool.run(shared)
        assert await pool.run(InTurn(((square_after, (0.001, 1)),))) == [square_after(0.001, 1)]
    finally:
        pool.close()


async def admitted_steps(
    runtime: Runtime, steps: list[Step[T]], alike: str = "", report: Progress = lambda *_: None
) -> list[T]:
    """``run_steps`` as a computation runs them: admitted, holding one place."""
    with runtime.executor.admitted():
        return await runtime.run_steps(DATASET, steps, lambda _: 0.0, report, alike=alike)


@contextlib.asynccontextmanager
async def lane_held(runtime: Runtime, folder: Path) -> AsyncIterator[Callable[[], None]]:
    """Another computation on ``runtime`` stepping on one worker (a ``meet`` step that
    waits in it) until the function given is called, or the block ends."""
    other = asyncio.create_task(admitted_steps(runtime, [Step("hold", meet, (str(folder), 0, 1))]))
    deadline = time.monotonic() + 30
    while not (folder / "0").exists():  # its step is in a worker
        assert time.monotonic() < deadline, "the other computation's step never started"
        assert not other.done()
        await asyncio.sleep(0.01)
    try:
        yield (folder / "1").touch
    finally:
        (folder / "1").touch()
        assert 0 not in await other


@pytest.mark.anyio
async def test_under_a_burst_a_computation_s_steps_share_one_lane_from_the_first(
    tmp_path: Path,
) -> None:
    # Check that when other computations step on every lane but one, a computation's
    # quick steps share tasks from its first one, at the pace the last computation on
    # the same data measured, and run one task at a time: each task is a round trip that
    # costs the busy workers CPU (16 digits benchmarks at once on two Dask workers ran
    # 48 tasks, 0.8 of the local pool's throughput); while the lanes are free, the steps
    # spread over both and the first is a task of its own, as no pace is known yet.
    steps = [Step(f"n={n}", square_after, (0.001, n)) for n in range(8)]
    async with stepping(tmp_path, workers=2) as (runtime, executor):
        assert await admitted_steps(runtime, steps) == [square_after(0.001, n) for n in range(8)]
        alone, executor.sizes = executor.sizes, []
        assert alone[0] == 1
        assert executor.peak_of["square_after"] == 2
        executor.peak_of.clear()
        async with lane_held(runtime, tmp_path):
            executor.sizes = []
            results = await admitted_steps(runtime, steps)
    assert results == [square_after(0.001, n) for n in range(8)]
    assert executor.sizes[0] > 1
    assert len(executor.sizes) < len(alone)
    assert executor.peak_of["square_after"] == 1


@pytest.mark.anyio
async def test_with_a_pace_known_the_free_lanes_share_the_steps_by_weight(tmp_path: Path) -> None:
    # Check that once a pace is known for the data, a computation's steps are spread over
    # the free lanes by weight, each task taking its lane's share of what is left: the
    # digits benchmark's strategies (weights k x n_init: 40, 40, 10) go as two tasks at
    # once, not two and then a third (a second round trip, 5 ms more on Dask).
    steps = [
        Step(name, square_after, (0.001, n), weight=w)
        for n, (name, w) in enumerate([("k-means++", 40), ("random", 40), ("pca", 10)])
    ]
    async with stepping(tmp_path, workers=2) as (runtime, executor):
        first = await admitted_steps(runtime, steps)
        assert executor.sizes == [1, 1, 1]
        executor.sizes = []
        again = await admitted_steps(runtime, steps)
        assert executor.sizes == [1, 2]
        # Other fit settings (max_iter, tol, the estimator: service.params.pace_form) may
        # cost another pace per unit of weight: theirs is measured afresh.
        executor.sizes = []
        other = await admitted_steps(runtime, steps, alike="max_iter=100000")
    assert first == again == other == [square_after(0.001, n) for n in range(3)]
    assert executor.sizes == [1, 1, 1]


@pytest.mark.anyio
async def test_a_lane_another_computation_gives_back_is_taken_at_the_next_round(
    tmp_path: Path,
) -> None:
    # Check that a computation started while another stepped on a lane takes it once the
    # other has ended, at its next round: the lanes are looked at each round, not once (a
    # long sweep begun beside a quick benchmark kept one of two workers idle to its end).
    steps = [Step(f"n={n}", square_after, (0.5, n)) for n in range(4)]
    async with (
        stepping(tmp_path, workers=2) as (runtime, executor),
        lane_held(runtime, tmp_path) as release,
    ):
        # The other ends as this one's first task goes out: 0.5 s before its next round.
        results = await admitted_steps(runtime, steps, report=lambda *_: release())
    assert results == [square_after(0.5, n) for n in range(4)]
    assert executor.peak_of["square_after"] == 2
