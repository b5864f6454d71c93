"""BLAS and OpenMP thread limits in this process (threadpoolctl), for the workers.

Inspecting the loaded BLAS/OpenMP libraries takes milliseconds (``threadpool_limits``
does it on every call): one controller per process, made here once.
"""

from __future__ import annotations

import contextlib
from typing import Any

_controller: Any = None


def refresh() -> None:
    """Inspect the libraries loaded now (a worker calls it once it has imported them)."""
    global _controller
    from threadpoolctl import ThreadpoolController

    _controller = ThreadpoolController()


def thread_limit(n_threads: int) -> contextlib.AbstractContextManager[Any]:
    """BLAS and OpenMP capped at ``n_threads`` threads in this process, within the block."""
    if _controller is None:
        refresh()
    return _controller.limit(limits=n_threads)  # type: ignore[no-any-return]
