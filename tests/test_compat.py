"""A data directory written by an earlier main is read by today's code: the same requests
are cache hits with the same bytes (API.md Part 3: every id computed before stays the same).

``tests/fixtures/compat`` was written by the commit its manifest names
(``tests/fixtures/make_compat_data.py`` says how to write it again): an upload with missing
cells and a categorical column, inline benchmarks with default and non-default parameters
(minibatch, bisecting, no scaling, custom centres, a silhouette on every sample), a table
benchmark with ``missing`` and ``normalize``, a sweep, a stability run, a model page and a
plot. Each is replayed on a copy with a real server of today's code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.process import ServiceProcess

pytestmark = pytest.mark.server

FIXTURE = Path(__file__).parent / "fixtures" / "compat"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def old_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("compat") / "data"
    shutil.copytree(FIXTURE / "data", data)
    with ServiceProcess(data) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def entries(method: str) -> list[dict[str, Any]]:
    return [e for e in MANIFEST["requests"] if e["method"] == method and "csv" not in e]


def test_the_upload_finds_its_dataset(old_data: httpx.Client) -> None:
    # Check that the same CSV uploaded again is the dataset stored before (same id, 200).
    (upload,) = [e for e in MANIFEST["requests"] if "csv" in e]
    again = old_data.post(
        upload["path"], content=upload["csv"], headers={"content-type": "text/csv"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == upload["body"]["id"]


@pytest.mark.parametrize(
    "entry", entries("POST"), ids=lambda e: f"{e['path']}-{e['json'].get('estimator', '')}"
)
def test_a_question_answered_before_is_a_hit_with_the_same_bytes(
    old_data: httpx.Client, entry: dict[str, Any]
) -> None:
    # Check that each question answered by the old code is served from the store (a hit),
    # with the bytes the old code answered but for the "cached" flag a hit sets.
    answered = base64.b64decode(entry["bytes"])
    again = old_data.post(entry["path"], json=entry["json"])
    assert again.status_code == 200, again.text
    assert again.headers["x-cache"] == "hit"
    assert again.json()["id"] == json.loads(answered)["id"]
    assert again.content == answered.replace(b'"cached":false', b'"cached":true', 1)


@pytest.mark.parametrize("entry", entries("GET"), ids=lambda e: e["path"].rsplit("/", 1)[-1])
def test_stored_models_and_plots_read_the_same(
    old_data: httpx.Client, entry: dict[str, Any]
) -> None:
    again = old_data.get(entry["path"])
    assert again.status_code == 200, again.text
    assert hashlib.sha256(again.content).hexdigest() == entry["sha256"]
