"""BLAS and OpenMP thread limits in this process (threadpoolctl), for the workers.

Inspecting the loaded BLAS/OpenMP libraries takes milliseconds (``threadpool_limits``
does it on every call): one controller per process, made here once.
"""

from __future__ import annotations

import contextlib
from typing import Any

_controller: Any = None

# Up to this many rows, a strategy's fit and scores (and the plot's 2-D fits) run faster
# on one thread than on waking the pools, task after task: in a worker PCA's 64 x 64 eigh
# took 12-21 ms with BLAS threads, 1 ms on one; a digits sweep of 19 steps, one task each,
# 0.75 s on one thread and 0.9-1.2 s on two (the same steps in one task: 0.75 s on two);
# at 100,000 x 32 a fit took 0.49 s on one thread, 0.46 s on two.
SERIAL_MAX_SAMPLES = 100_000
# ... and this many values: wide data's work grows with its columns, and a fit of
# 100,000 x 1,000 on one thread of a many-core host would take many times longer.
SERIAL_MAX_CELLS = 3_200_000


def refresh() -> None:
    """Inspect the libraries loaded now (a worker calls it once it has imported them)."""
    global _controller
    from threadpoolctl import ThreadpoolController

    _controller = ThreadpoolController()


def is_small(shape: tuple[int, ...]) -> bool:
    """Whether data of ``shape`` has at most :data:`SERIAL_MAX_SAMPLES` rows and
    :data:`SERIAL_MAX_CELLS` values: its fits and scores run on one thread."""
    n_samples = shape[0]
    cells = n_samples * (shape[1] if len(shape) > 1 else 1)
    return n_samples <= SERIAL_MAX_SAMPLES and cells <= SERIAL_MAX_CELLS


def serial_when_small(shape: tuple[int, ...]) -> contextlib.AbstractContextManager[Any]:
    """One thread within the block for small data (:func:`is_small`); the worker's
    limit for larger data."""
    return thread_limit(1) if is_small(shape) else contextlib.nullcontext()


def thread_limit(n_threads: int) -> contextlib.AbstractContextManager[Any]:
    """BLAS and OpenMP capped at ``n_threads`` threads in this process, within the block."""
    if _controller is None:
        refresh()
    return _controller.limit(limits=n_threads)  # type: ignore[no-any-return]
