"""Upload bodies built byte by byte (crafted .npy headers, zips with lying directories),
and the checks on what the service answers to them."""

from __future__ import annotations

import io
import struct
import time
import zipfile

import httpx
import numpy as np


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """The magic string and header of an .npy file declaring ``shape``, and no values."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_bytes_at(array: np.ndarray, offset: int) -> bytes:
    """A valid version 1.0 .npy of ``array`` whose values start ``offset`` bytes in
    (``np.save`` pads its header to a multiple of 64)."""
    header = str(np.lib.format.header_data_from_array_1_0(array))
    header = header.ljust(offset - 10 - 1) + "\n"
    return (
        b"\x93NUMPY\x01\x00"
        + len(header).to_bytes(2, "little")
        + header.encode()
        + array.tobytes(order="A")
    )


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_directory(content: bytes, member: str, **fields: int) -> bytes:
    """Rewrite ``crc`` or ``file_size`` of one member in the zip's central directory."""
    raw = bytearray(content)
    end = raw.rfind(b"PK\x05\x06")
    (count,) = struct.unpack_from("<H", raw, end + 10)
    (position,) = struct.unpack_from("<I", raw, end + 16)
    offsets = {"crc": 16, "file_size": 24}
    for _ in range(count):
        assert raw[position : position + 4] == b"PK\x01\x02"
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", raw, position + 28)
        name = raw[position + 46 : position + 46 + name_length].decode()
        if name == member:
            for field, value in fields.items():
                struct.pack_into("<I", raw, position + offsets[field], value)
        position += 46 + name_length + extra_length + comment_length
    return bytes(raw)


async def post(
    client: httpx.AsyncClient, media_type: str, content: bytes, **params: str
) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await client.post(
        "/v1/datasets", content=content, headers={"content-type": media_type}, params=params
    )
    return response, time.monotonic() - start


def assert_problem(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail
