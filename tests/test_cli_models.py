"""``clusterbench export``, ``anomalies`` and ``profiles``, and the client's methods under
them, against a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from service.client import Client
from service.datasets import load_builtin
from service.process import ServiceProcess
from service.report import profile_table
from tests.helpers import clusterbench


@pytest.mark.server
def test_export_anomalies_and_profiles(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that the commands write the service's ONNX bytes, print one row per sample
    # flagged as the service flags it, and print the model's profile table.
    X, _ = load_builtin("iris")
    with Client(server.url) as client:
        result = client.benchmark("iris", strategies=["k-means++"], random_state=5)
        model_id = result.results[0].model_id
        onnx = client.export(model_id)
        answer = client.anomalies(model_id, X, contamination=0.1)
        model = client.model(model_id)

    done = clusterbench("export", model_id, "-o", "m.onnx", "--url", server.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.onnx").read_bytes() == onnx
    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    labels, _ = session.run(["label", "scores"], {"X": X.astype(np.float32)})
    assert labels.tolist() == [row.label for row in answer.rows]

    np.savetxt(tmp_path / "rows.csv", X, delimiter=",")
    flagged = clusterbench(
        "anomalies",
        model_id,
        "rows.csv",
        "--contamination",
        "0.1",
        "--url",
        server.url,
        cwd=tmp_path,
    )
    assert flagged.returncode == 0, flagged.stderr
    lines = flagged.stdout.splitlines()
    assert lines[0].split() == ["row", "label", "distance", "anomaly"]
    assert [line.split()[3] == "yes" for line in lines[1:]] == [r.is_anomaly for r in answer.rows]
    assert f"{sum(r.is_anomaly for r in answer.rows)} of {len(X)} rows flagged" in flagged.stderr

    shown = clusterbench("profiles", model_id, "--url", server.url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert model.clusters is not None
    table = profile_table([c.model_dump() for c in model.clusters])
    assert [line.split("  ")[0].strip() for line in shown.stdout.splitlines()] == [
        row[0] for row in table
    ]
    assert all(cell in shown.stdout for row in table for cell in row)

    refused = clusterbench(
        "anomalies",
        model_id,
        "rows.csv",
        "--contamination",
        "0.7",
        "--url",
        server.url,
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "(422)" in refused.stderr
