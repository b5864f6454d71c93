"""The data directory's disk as the service's writes found it, for ``/readyz``."""

from __future__ import annotations

import contextlib
import shutil

from service.errors import MIN_FREE_BYTES, StorageError, StorageFullError


class SpaceWatch:
    """The disk as the writes it refused found it, for readiness.

    A write the disk refused for lack of space removes what it had written, which
    frees space again: by the free space alone the disk looks fine, yet the same write
    fails again. So after a refusal the disk counts as full until MIN_FREE_BYTES more
    are free than when it was refused.
    """

    def __init__(self) -> None:
        self._refused: tuple[str, int] | None = None

    def refused(self, problem: StorageError) -> None:
        """Note ``problem`` if it is a disk refusing a write for lack of space."""
        if isinstance(problem, StorageFullError) and problem.directory is not None:
            with contextlib.suppress(OSError):
                self._refused = (problem.directory, shutil.disk_usage(problem.directory).free)

    def problem(self) -> str | None:
        """Why the disk still counts as full (a sentence for ``/readyz``), or None."""
        if self._refused is None:
            return None
        directory, free_then = self._refused
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            return None
        if free >= free_then + MIN_FREE_BYTES:
            self._refused = None
            return None
        return (
            f"the data directory {directory} is full: a write was refused for lack of space "
            f"with {free_then} bytes free once it was undone, and {free} are free now"
        )
