"""The headers of ``.npy`` arrays, alone or as members of a zip (``.npz``,
``save_npz``): read and checked against the bounds before any value is decoded."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from service.errors import InvalidDataError
from service.formats.limits import Bounds, check_cells


@dataclass(frozen=True)
class _NpyHeader:
    """What an .npy header declares, read before any value."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    size: int  # bytes of the magic string and header: the values start here

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(stream: IO[bytes], what: str) -> _NpyHeader:
    """Read and check the header of an .npy stream (at its start); the values stay unread."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InvalidDataError(
                f"{what} is in .npy format version {version[0]}.{version[1]}; "
                "versions 1.0 and 2.0 are read",
                errors=[{"loc": [_member(what)], "msg": "unsupported .npy version"}],
            )
        size = stream.tell()
    except (ValueError, TypeError, EOFError, OSError) as exc:
        raise InvalidDataError(f"{what} is not a readable .npy array: {exc}") from None
    if dtype.hasobject:
        raise InvalidDataError(
            f"{what} holds Python objects; only numeric arrays are accepted and nothing "
            "is ever unpickled",
            errors=[{"loc": [_member(what)], "msg": f"dtype {dtype} holds objects"}],
        )
    if any(n < 0 for n in shape):
        raise InvalidDataError(
            f"{what} declares a negative dimension: shape {shape}",
            errors=[{"loc": [_member(what)], "msg": "negative dimension"}],
        )
    return _NpyHeader(shape=tuple(shape), dtype=dtype, size=size)


def _member(what: str) -> str:
    return "y" if what.startswith("'y'") else "X"


def _is_scalar_of(dtype: np.dtype[Any], kinds: str) -> bool:
    """Whether ``dtype`` is one of the ``kinds``, with no fields and no sub-array."""
    return dtype.kind in kinds and dtype.names is None and dtype.subdtype is None


def _check_features_header(header: _NpyHeader, what: str, bounds: Bounds) -> None:
    dtype = header.dtype
    if not _is_scalar_of(dtype, "iuf"):
        raise InvalidDataError(
            f"{what} holds {dtype} values; it must hold integers or floats",
            errors=[{"loc": ["X"], "msg": f"dtype {dtype} is not numeric"}],
        )
    if len(header.shape) != 2:
        raise InvalidDataError(
            f"X must be 2-dimensional (n_samples, n_features); {what} has shape {header.shape}",
            errors=[{"loc": ["X"], "msg": f"expected 2 dimensions, got {len(header.shape)}"}],
        )
    check_cells(header.shape, bounds.max_cells, what=f"{what} declares")


def _check_size(header: _NpyHeader, what: str, size: int) -> None:
    """The values an .npy header declares must be exactly the bytes that follow it."""
    declared = header.size + header.nbytes
    if size != declared:
        raise InvalidDataError(
            f"{what} is {size:,} bytes long but its header (shape {header.shape}, "
            f"{header.dtype}) declares {declared:,}",
            errors=[{"loc": [_member(what)], "msg": "size does not match its header"}],
        )


def _stored_itemsize(dtype: np.dtype[Any]) -> int:
    return 4 if dtype == np.float32 else 8


def _array_name(filename: str) -> str:
    # np.savez names its members "<name>.npy"; np.load's NpzFile drops the suffix.
    return filename.removesuffix(".npy")


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> _NpyHeader:
    if info.flag_bits & 0x1:
        raise InvalidDataError(
            f"{what} is encrypted",
            errors=[{"loc": [_member(what)], "msg": "encrypted"}],
        )
    try:
        with archive.open(info) as stream:
            header = _npy_header(stream, what)
    except NotImplementedError as exc:  # a compression method zipfile does not know
        raise InvalidDataError(f"{what} cannot be read: {exc}") from None
    return header


def _check_y_header(header: _NpyHeader, n_samples: int) -> None:
    dtype = header.dtype
    if not _is_scalar_of(dtype, "iuUf"):
        raise InvalidDataError(
            f"'y' in the .npz holds {dtype} values; labels must be integers or strings",
            errors=[{"loc": ["y"], "msg": f"unsupported dtype {dtype}"}],
        )
    if len(header.shape) != 1:
        raise InvalidDataError(
            f"y must be 1-dimensional; 'y' in the .npz has shape {header.shape}",
            errors=[{"loc": ["y"], "msg": f"expected 1 dimension, got {len(header.shape)}"}],
        )
    if header.shape[0] != n_samples:
        raise InvalidDataError(
            f"y has {header.shape[0]} labels but X has {n_samples} samples",
            errors=[{"loc": ["y"], "msg": f"{header.shape[0]} labels, expected {n_samples}"}],
        )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as stream:
        array: np.ndarray = np.lib.format.read_array(stream, allow_pickle=False)
    return array
