"""The on-disk dataset store: each dataset once, under ``<data_dir>/datasets/<id>/``,
written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets.identity import content_hash, csr_arrays, is_sparse, stored_nbytes
from service.datasets.info import BUILTIN_LOADERS, SPARSE_FILES, DatasetInfo, is_id
from service.errors import (
    DatasetConflictError,
    DatasetNotFoundError,
    StorageFullError,
    storage_errors,
)
from service.tables import TableParts


@cache
def _builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    loader: Callable[..., tuple[np.ndarray, np.ndarray]] = getattr(
        sklearn.datasets, BUILTIN_LOADERS[name]
    )
    X, y = loader(return_X_y=True)
    return np.ascontiguousarray(X, dtype=np.float64), y.astype(np.int64)


def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of a built-in dataset, as scikit-learn ships them (no download)."""
    if name not in BUILTIN_LOADERS:
        raise DatasetNotFoundError(f"no built-in dataset named {name!r}")
    return _builtin_arrays(name)


class DatasetStore:
    """Content-addressed datasets under ``<data_dir>/datasets``.

    Writes go to a temporary folder renamed into place, so a dataset folder is
    either whole or absent, whatever process writes it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Each info with the stamp of the meta file it was read from (:func:`_stamp`): another
        # process (a worker storing an upload) may rewrite the file, e.g. to mark inline
        # data as uploaded, and a stale info would list it as inline for ever.
        self._infos: dict[str, tuple[tuple[int, int], DatasetInfo]] = {}
        self._builtin_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def path(self, dataset_id: str) -> Path:
        if not is_id(dataset_id):
            raise DatasetNotFoundError(f"{dataset_id!r} is not a dataset id (64 hex characters)")
        return self.root / dataset_id

    def put(
        self,
        X: Any,
        y: np.ndarray | None,
        *,
        name: str | None,
        format: str,
        inline: bool = False,
        feature_names: list[str] | None = None,
        parts: TableParts | None = None,
        room: int | None = None,
        npy_file: Path | None = None,
    ) -> tuple[DatasetInfo, bool]:
        """Store validated arrays; returns the info and whether it was new.

        The same numbers sent again keep the name and feature names they were first
        stored with (the id is the numbers' alone). ``parts``: a table's columns,
        categorical codes and weights (see :mod:`service.tables`). A sparse X (a canonical
        CSR matrix) is stored as its three arrays (:data:`SPARSE_FILES`), never densified.
        ``room``: new uploaded data that would take the stored uploads past this many
        bytes is refused (:meth:`_check_room`). ``npy_file``: an .npy file that holds X
        as it is (``ReadNotes.npy_file``), linked into the store instead of written again
        (an upload of 200,000 x 64 spared 100 MB of fresh pages, 0.5-1 s here).
        """
        dataset_id = content_hash(X, y, parts)
        final = self.root / dataset_id
        if (final / "meta.json").exists():
            try:
                known = self.get(dataset_id)
                if known.inline and not inline:
                    # Uploaded now: it is the client's to keep, no longer a pruneable copy.
                    known = replace(known, inline=False)
                    self._write_meta(final, known)
                self.touch(known)
                return known, False
            except (DatasetNotFoundError, FileNotFoundError):
                # Removed since the look (the last holder let go, or another tenant's
                # roll-back): stored anew below. It was a 404 for data just sent.
                pass
        if room is not None:
            self._check_room(X, y, room, parts)
        table = _table_fields(X, parts)
        info = DatasetInfo(
            id=dataset_id,
            name=name,
            n_samples=int(X.shape[0]),
            n_features=table.pop("n_features", int(X.shape[1])),
            has_labels=y is not None,
            n_labels=None if y is None else int(np.unique(y).size),
            dtype=X.dtype.name,
            format=format,
            inline=inline,
            feature_names=feature_names,
            sparse=is_sparse(X),
            nnz=int(X.nnz) if is_sparse(X) else None,
            **table,
        )
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            with storage_errors(f"storing dataset {dataset_id}", self.root):
                # A tenant's data is readable by this service's user only, not 0644 by any.
                tmp.mkdir(mode=0o700)
                if is_sparse(X):
                    for file, array in zip(SPARSE_FILES, csr_arrays(X), strict=True):
                        np.save(tmp / file, array, allow_pickle=False)
                elif npy_file is None or not _linked(npy_file, tmp / "X.npy"):
                    np.save(tmp / "X.npy", X, allow_pickle=False)
                if y is not None:
                    np.save(tmp / "y.npy", y, allow_pickle=False)
                if parts is not None and parts.codes is not None:
                    np.save(tmp / "C.npy", parts.codes, allow_pickle=False)
                if parts is not None and parts.sample_weight is not None:
                    np.save(tmp / "w.npy", parts.sample_weight, allow_pickle=False)
                (tmp / "meta.json").write_text(json.dumps(info.meta()))
                for child in tmp.iterdir():
                    child.chmod(0o600)
                    _fsync(child)
                try:
                    tmp.rename(final)
                except OSError:
                    if not (final / "meta.json").exists():
                        raise
                    # Another process stored the same content first; theirs is as good.
                    return self.get(dataset_id), False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._remember(info)
        return info, True

    def get(self, dataset_id: str) -> DatasetInfo:
        meta = self.path(dataset_id) / "meta.json"
        with self._lock:
            known = self._infos.get(dataset_id)
        # Another process may have deleted or rewritten it: a stat is the price of not
        # serving a ghost.
        try:
            stamp = _stamp(meta)
            if known is not None and known[0] == stamp:
                return known[1]
            info = DatasetInfo.from_meta(json.loads(meta.read_text()))
        except FileNotFoundError:
            raise DatasetNotFoundError(f"no dataset with id {dataset_id}") from None
        with self._lock:
            self._infos[dataset_id] = (stamp, info)
        return info

    def _remember(self, info: DatasetInfo) -> None:
        """Cache ``info``, just written to its meta file."""
        with contextlib.suppress(OSError):
            stamp = _stamp(self.root / info.id / "meta.json")
            with self._lock:
                self._infos[info.id] = (stamp, info)

    def builtin(self, name: str) -> DatasetInfo:
        """The stored copy of a built-in dataset, written on first use (scikit-learn
        loads it: in a worker, see :func:`store_builtin`)."""
        info = self.stored_builtin(name)
        if info is not None:
            return info
        X, y = load_builtin(name)
        info, _ = self.put(X, y, name=name, format="builtin")
        self.remember_builtin(name, info)
        return info

    def stored_builtin(self, name: str) -> DatasetInfo | None:
        """The stored copy of a built-in dataset once this process knows it, else None."""
        with self._lock:
            dataset_id = self._builtin_ids.get(name)
        return None if dataset_id is None else self.get(dataset_id)

    def remember_builtin(self, name: str, info: DatasetInfo) -> None:
        """Know ``info`` as the stored copy of the built-in ``name`` (written elsewhere)."""
        with self._lock:
            self._builtin_ids[name] = info.id
        self._remember(info)

    def stored(self) -> list[DatasetInfo]:
        """Every stored dataset (built-in copies included), built-ins first."""
        found = []
        for folder in self.root.iterdir():
            if is_id(folder.name):
                try:
                    found.append(self.get(folder.name))
                except (DatasetNotFoundError, ValueError, TypeError):
                    continue  # half-deleted, or not ours
        order = list(BUILTIN_LOADERS)
        return sorted(
            found,
            key=lambda i: (
                order.index(i.name) if i.format == "builtin" and i.name in order else len(order),
                i.name or "",
                i.id,
            ),
        )

    def delete(self, dataset_id: str) -> None:
        """Remove an uploaded dataset; built-in copies stay (they are not the client's)."""
        info = self.get(dataset_id)
        if info.format == "builtin":
            raise DatasetConflictError(
                f"{info.id} is the stored copy of the built-in dataset {info.name!r}; "
                "built-in datasets cannot be deleted"
            )
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        try:
            with storage_errors(f"deleting dataset {dataset_id}", self.root):
                (self.root / dataset_id).rename(trash)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"no dataset with id {dataset_id}") from None
        with self._lock:
            self._infos.pop(dataset_id, None)
        shutil.rmtree(trash, ignore_errors=True)

    def _write_meta(self, folder: Path, info: DatasetInfo) -> None:
        tmp = folder / f".meta-{uuid.uuid4().hex}"
        try:
            with storage_errors(f"updating dataset {info.id}", folder):
                tmp.write_text(json.dumps(info.meta()))
                tmp.replace(folder / "meta.json")
        finally:
            with contextlib.suppress(OSError):  # read-only: unlink fails even when missing
                tmp.unlink(missing_ok=True)
        self._remember(info)

    def touch(self, info: DatasetInfo) -> None:
        """Mark an inline dataset as just used (its meta file's time orders the pruning)."""
        if info.inline:
            # Only the pruning order: a read-only or full disk must not fail a read.
            with contextlib.suppress(OSError):
                os.utime(self.root / info.id / "meta.json")

    def prune_inline(self, max_bytes: int, *, keep: str) -> list[str]:
        """Delete the least recently used inline datasets past ``max_bytes``; never ``keep``.

        Returns the ids deleted.
        """
        found = []
        for folder in self.root.iterdir():
            if not is_id(folder.name) or folder.name == keep:
                continue
            try:
                meta = folder / "meta.json"
                if not json.loads(meta.read_text()).get("inline"):
                    continue
                size = sum(f.stat().st_size for f in folder.iterdir())
                found.append((meta.stat().st_mtime, size, folder.name))
            except (OSError, ValueError):
                continue  # being written or deleted by another process
        keep_size = sum(f.stat().st_size for f in (self.root / keep).iterdir())
        total = keep_size + sum(size for _, size, _ in found)
        deleted = []
        for _, size, dataset_id in sorted(found):
            if total <= max_bytes:
                break
            with contextlib.suppress(DatasetNotFoundError):
                self.delete(dataset_id)
                deleted.append(dataset_id)
            total -= size
        return deleted

    def _check_room(
        self, X: Any, y: np.ndarray | None, max_bytes: int, parts: TableParts | None
    ) -> None:
        """Refuse (507) new uploaded data that would take the stored uploads (built-ins
        and inline data aside) past ``max_bytes`` (:meth:`put` stores data already stored
        whatever the room). A table's codes, categories and weights count with its numbers."""
        adding = stored_nbytes(X) + (0 if y is None else y.nbytes)
        adding += 0 if parts is None else parts.nbytes
        stored = 0
        for folder in self.root.iterdir():
            try:
                meta = json.loads((folder / "meta.json").read_text())
                if is_id(folder.name) and meta["format"] != "builtin" and not meta["inline"]:
                    stored += sum(f.stat().st_size for f in folder.iterdir())
            except (OSError, ValueError, KeyError):
                continue  # not a dataset, or being written or deleted by another process
        if stored + adding > max_bytes:
            raise StorageFullError(
                f"storing this dataset ({adding:,} bytes) would take the uploaded datasets "
                f"past {max_bytes:,} bytes ({stored:,} stored; CLUSTERBENCH_DATASETS_MAX_BYTES); "
                "delete datasets to make room"
            )

    def exists(self, info: DatasetInfo) -> bool:
        """Whether the dataset is still stored (built-ins always are: they come back)."""
        return info.format == "builtin" or (self.root / info.id / "meta.json").exists()

    def files(self, info: DatasetInfo) -> tuple[Path, Path | None]:
        folder = self.root / info.id
        return folder / "X.npy", (folder / "y.npy") if info.has_labels else None


def _stamp(path: Path) -> tuple[int, int]:
    """A file's inode and modification time: a file replaced (a new inode) or touched
    (a new time) has another stamp, even within the clock's resolution."""
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


def _table_fields(X: np.ndarray, parts: TableParts | None) -> dict[str, Any]:
    """The DatasetInfo fields of a table with more than complete numbers."""
    if parts is None:
        return {}
    codes = parts.codes
    absent = np.isnan(X).any(axis=1) if X.dtype.kind == "f" else np.zeros(len(X), bool)
    if codes is not None:
        absent |= (codes < 0).any(axis=1)
    if parts.is_plain and not absent.any():
        return {}
    categories = parts.categories or []
    return {
        "n_features": sum(c.kind in ("numeric", "categorical") for c in parts.columns),
        "columns": [asdict(c) for c in parts.columns],
        "categories": categories or None,
        "complete_rows": int(len(X) - absent.sum()),
        "n_encoded": int(X.shape[1] + sum(len(c) for c in categories)),
    }


def store_builtin(root: Path, name: str) -> DatasetInfo:
    """Worker entry point: the built-in dataset ``name`` stored under ``root``."""
    return DatasetStore(root).builtin(name)


def _linked(source: Path, target: Path) -> bool:
    """Whether ``target`` could be made a hard link to ``source`` (not across file
    systems, nor on one without links)."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
