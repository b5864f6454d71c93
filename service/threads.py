"""BLAS and OpenMP thread limits in this process (threadpoolctl), for the workers.

Inspecting the loaded BLAS/OpenMP libraries takes milliseconds (``threadpool_limits``
does it on every call): one controller per process, made here once.
"""

from __future__ import annotations

import contextlib
from typing import Any

_controller: Any = None

# Up to this many rows, the small dense algebra of a request (PCA's eigh on a covariance
# of n_features squared, the plot's 2-D fits) runs faster on one thread than on waking
# the pools: in a worker PCA's 64 x 64 eigh took 12-21 ms with BLAS threads, 1 ms on one.
SERIAL_MAX_SAMPLES = 100_000


def refresh() -> None:
    """Inspect the libraries loaded now (a worker calls it once it has imported them)."""
    global _controller
    from threadpoolctl import ThreadpoolController

    _controller = ThreadpoolController()


def serial_when_small(n_samples: int) -> contextlib.AbstractContextManager[Any]:
    """One thread within the block for data of at most :data:`SERIAL_MAX_SAMPLES` rows."""
    return thread_limit(1) if n_samples <= SERIAL_MAX_SAMPLES else contextlib.nullcontext()


def thread_limit(n_threads: int) -> contextlib.AbstractContextManager[Any]:
    """BLAS and OpenMP capped at ``n_threads`` threads in this process, within the block."""
    if _controller is None:
        refresh()
    return _controller.limit(limits=n_threads)  # type: ignore[no-any-return]
