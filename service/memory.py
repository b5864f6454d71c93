"""The in-process layer of hot values both result stores keep in front of their storage
(SQLite or Redis): a byte-bounded LRU, so that a hit is served without touching the disk
or the network, nor re-serialising anything; and :func:`keep_recent`, for what is bounded
by count."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def keep_recent(items: OrderedDict[K, V], key: K, value: V, most: int) -> None:
    """``items[key] = value`` as the most recent of ``items``, which keeps the ``most``
    recent: the least recent are forgotten first."""
    items[key] = value
    items.move_to_end(key)
    while len(items) > most:
        items.popitem(last=False)


class MemoryLRU:
    """A byte-bounded LRU of hot values, shared by this process's threads.

    Keys are ``(what, id)`` pairs (``("benchmark", id)``, ``("plot:<key>", benchmark id)``,
    ``("model", id)``, ``(kind, key)``), so that :meth:`drop` forgets everything of one
    benchmark at once. A value larger than the bound is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple[str, str], value: Any, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def discard(self, key: tuple[str, str]) -> None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def drop(self, benchmark_id: str) -> None:
        """Forget every value kept for ``benchmark_id`` (its body and its plots)."""
        with self._lock:
            for key in [k for k in self._items if k[1] == benchmark_id]:
                self._bytes -= self._items.pop(key)[1]
