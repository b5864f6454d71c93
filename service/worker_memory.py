"""What a worker process gives back once a task is done: the memory the task freed, at
once and again a while later, and the task's result once it has been sent.

glibc keeps freed memory for the next allocation, and raises its threshold for mapping
large ones to the largest it has seen freed (up to 32 MB): a block-wise pass over 1M x 32
float32 data left 31-49 MB resident in each worker after its task, and a worker that had
sent the models of a 100k x 50k sparse benchmark kept 20-38 MB, each counted in every
peak that followed while another worker computed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

# After a task ends, its worker gives back freed memory again after each of these
# delays: by then the pool has sent the result (pickled, in a buffer as large as its
# arrays), even when the send waited for another worker's (they share one pipe).
TRIM_AFTER_S = (0.05, 0.5, 5.0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only


def give_back_freed_memory() -> None:
    """Return to the system what the heap holds free (glibc's ``malloc_trim``; elsewhere
    nothing), 0.1 ms."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _Trimmer:
    """One thread per process that gives back freed memory :data:`TRIM_AFTER_S` after
    the last task ended (a task ending meanwhile starts the delays over)."""

    def __init__(self) -> None:
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose thread runs (workers are forked)

    def task_ended(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="trim", daemon=True).start()
        self._ended.set()

    def _run(self) -> None:
        while True:
            self._ended.wait()
            self._ended.clear()
            for delay in TRIM_AFTER_S:
                if self._ended.wait(delay):
                    break  # another task ended: its delays start over
                give_back_freed_memory()


_trimmer = _Trimmer()


def task_ended() -> None:
    """Give back what the task freed now, and again :data:`TRIM_AFTER_S` later, when its
    result has left."""
    give_back_freed_memory()
    _trimmer.task_ended()


_SENT = object()


class LetGoOnceSent:
    """A task's result as its worker sends it: pickled as the value itself (the other side
    receives the value), which it then lets go of. pebble's worker keeps its last result
    referenced while it waits for the next task; only a process pool may return it."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Callable[[Any], Any], tuple[Any]]:
        if self.value is _SENT:
            raise pickle.PicklingError("this task's result was sent already")
        value, self.value = self.value, _SENT
        return _received, (value,)


def _received(value: Any) -> Any:
    return value
