"""The ``clusterbench`` console command, run as users run it, against a real server."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from rich.console import Console

from service import cli
from service.cli import build_parser
from service.cli_flags import DATA_FIELDS, flag_of
from service.client import KINDS, Client
from service.process import ServiceProcess, free_port
from tests.helpers import clusterbench
from tests.scripted import ID, Script, job_script


def _csv(path: Path) -> Path:
    rows = [f"{i % 7}.5,{(i * 3) % 11}.25,{'ab'[i % 2]}" for i in range(40)]
    path.write_text("\n".join(["u,v,group", *rows]) + "\n")
    return path


@pytest.mark.server
def test_run_prints_the_services_table(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that `clusterbench run` prints exactly the service's text/plain table, and
    # names the benchmark on stderr.
    done = clusterbench(
        "run",
        "--url",
        server.url,
        "--dataset",
        "iris",
        "--init",
        "k-means++",
        "random",
        "--random-state",
        "4",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    with Client(server.url) as client:
        result = client.benchmark("iris", strategies=["k-means++", "random"], random_state=4)
        assert done.stdout == client.table(result.id)
    assert f"benchmark {result.id}" in done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[2:4]] == ["k-means++", "random"]


@pytest.mark.server
def test_run_leaves_out_a_default_pca_that_cannot_run(
    server: ServiceProcess, tmp_path: Path
) -> None:
    # Check that `clusterbench run --n-clusters 5` on iris (4 features) prints the table
    # of k-means++ and random with pca's warning on stderr, where it failed with a 422
    # about pca, which the user never named; and that a named pca still fails.
    done = clusterbench(
        "run", "--url", server.url, "--dataset", "iris", "--n-clusters", "5", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t")[0].strip() for line in done.stdout.splitlines()[2:-1]]
    assert rows == ["k-means++", "random"]
    assert "warning: strategy 'pca' takes n_clusters=5 principal components" in done.stderr
    named = clusterbench(
        "run", "--url", server.url, "--dataset", "iris", "--n-clusters", "5", "--init", "pca",
        cwd=tmp_path,
    )  # fmt: skip
    assert named.returncode != 0
    assert "min(n_samples, n_features)=4" in named.stderr


@pytest.mark.server
def test_run_uploads_a_file_first(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that `run --dataset FILE` uploads the file (its format from its extension)
    # and benchmarks it.
    path = _csv(tmp_path / "groups.csv")
    done = clusterbench(
        "run",
        "--url",
        server.url,
        "--dataset",
        str(path),
        "--label-column",
        "group",
        "--init",
        "random",
        "--n-clusters",
        "3",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    with Client(server.url) as client:
        info = client.upload(path, label_column="group")
        result = client.benchmark(info.id, strategies=["random"], n_clusters=3)
        assert done.stdout == client.table(result.id)
    assert f"dataset {info.id}: 40 samples, 2 features, with labels" in done.stderr


@pytest.mark.server
def test_upload_prints_the_id_and_shape(server: ServiceProcess, tmp_path: Path) -> None:
    # Check `clusterbench upload FILE`: the id, then the shape, on one line.
    path = _csv(tmp_path / "groups.csv")
    done = clusterbench(
        "upload", str(path), "--label-column", "group", "--url", server.url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    dataset_id, shape = done.stdout.rstrip("\n").split("\t")
    assert shape == "40 samples, 2 features, with labels"
    with Client(server.url) as client:
        info = client.dataset(dataset_id)
    assert (info.n_samples, info.n_features, info.has_labels, info.format) == (40, 2, True, "csv")


@pytest.mark.server
def test_upload_a_libsvm_file_and_a_weighted_table(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that `clusterbench upload` sends a .svm file as libsvm (kept sparse) and a CSV
    # with --categorical and --weight-column (it had neither flag nor the extension).
    svm = tmp_path / "words.svm"
    svm.write_text("".join(f"{i % 2} {i % 5}:1.5 {5 + i % 3}:0.5\n" for i in range(20)))
    table = tmp_path / "weighted.csv"
    table.write_text("size,code,w\n" + "".join(f"{i},{i % 3},{1 + i % 2}\n" for i in range(12)))
    url = ("--url", server.url)
    done = clusterbench("upload", str(svm), "--json", *url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = orjson.loads(done.stdout)
    assert (info["format"], info["sparse"], info["n_features"]) == ("libsvm", True, 8)
    assert info["density"] == pytest.approx(40 / (20 * 8))
    done = clusterbench(
        "upload",
        str(table),
        "--categorical",
        "code",
        "--weight-column",
        "w",
        "--json",
        *url,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    kinds = {c["name"]: c["kind"] for c in orjson.loads(done.stdout)["columns"]}
    assert kinds == {"size": "numeric", "code": "categorical", "w": "weight"}


@pytest.mark.server
def test_plot_writes_the_services_png(server: ServiceProcess, tmp_path: Path) -> None:
    # Check `clusterbench plot ID -o FILE`, whole and with --init.
    with Client(server.url) as client:
        result = client.benchmark("iris", strategies=["k-means++", "random"], random_state=4)
    done = clusterbench("plot", result.id, "-o", "plot.png", "--url", server.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = httpx.get(f"{server.url}{result.plot_url}", timeout=60).content
    assert (tmp_path / "plot.png").read_bytes() == expected
    one = clusterbench(
        "plot", result.id, "-o", "one.png", "--init", "random", "--url", server.url, cwd=tmp_path
    )
    assert one.returncode == 0, one.stderr
    panel = httpx.get(f"{server.url}{result.plot_url}", params={"init": "random"}, timeout=60)
    assert (tmp_path / "one.png").read_bytes() == panel.content


@pytest.mark.server
def test_an_unreachable_service_is_one_line(tmp_path: Path) -> None:
    # Check the error when nothing listens at --url: one line, exit status 1.
    url = f"http://127.0.0.1:{free_port()}"
    done = clusterbench("run", "--url", url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"clusterbench: error: cannot reach {url}: is the service running? "
        "start it with `clusterbench serve`\n"
    )


@pytest.mark.server
def test_a_problem_is_one_line_with_its_detail(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that a problem the service answers is printed as its detail, exit status 1;
    # and that a missing file is said before anything is sent.
    done = clusterbench("run", "--url", server.url, "--dataset", "no-such-data", cwd=tmp_path)
    detail = httpx.post(f"{server.url}/v1/benchmarks", json={"dataset": "no-such-data"}).json()
    assert done.returncode == 1
    assert done.stderr == f"clusterbench: error: {detail['detail']} ({detail['status']})\n"
    missing = clusterbench("upload", "missing.csv", "--url", server.url, cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (
        1,
        "clusterbench: error: no such file: missing.csv\n",
    )


@pytest.mark.server
def test_serve_serves_on_its_port_and_data_dir(tmp_path: Path) -> None:
    # Check `clusterbench serve --port N --data-dir D`: the flags win over the environment's
    # settings, it answers on N, keeps its data in D, and stops on SIGINT.
    env_dir = tmp_path / "env-data"
    env_dir.mkdir()
    flag_dir = tmp_path / "flag-data"
    server = ServiceProcess(
        env_dir,
        ["-m", "service.cli", "serve", "--port", "{port}", "--data-dir", str(flag_dir)],
        CLUSTERBENCH_PORT=str(free_port()),
        CLUSTERBENCH_WORKERS="1",
    )
    with server:
        with Client(server.url) as client:
            info = client.upload(b"a,b\n0,0\n1,1\n", "text/csv")
        assert (flag_dir / "datasets" / info.id).is_dir()
        assert not (env_dir / "datasets").exists()
    assert server.process is not None
    assert server.process.returncode is not None


def test_flags_are_checked_before_anything_runs() -> None:
    # Check that a bad port or worker count is an argparse error (status 2), not a traceback.
    parser = build_parser()
    for argv in (["serve", "--port", "70000"], ["serve", "--workers", "0"], ["plot"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2


# -- in-process, against a scripted service ------------------------------------------------


def _scripted(monkeypatch: pytest.MonkeyPatch, script: Script) -> None:
    """Make the command's clients talk to ``script`` instead of the network."""

    class Scripted(Client):
        def __init__(self, base_url: str | None = None, **options: Any) -> None:
            super().__init__(base_url, transport=httpx.MockTransport(script), **options)

    monkeypatch.setattr(cli, "Client", Scripted)


def test_run_follows_a_job_with_a_progress_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Check that `run` follows a job to its end, drawing a progress bar on a terminal,
    # sends $CLUSTERBENCH_API_KEY, then prints the result's table.
    table = "_" * 82 + "\ninit\t\ttime\n" + "_" * 82 + "\n"
    script = job_script()
    script.answers.append(httpx.Response(200, text=table))
    _scripted(monkeypatch, script)
    drawn = io.StringIO()
    monkeypatch.setattr(
        cli, "Console", lambda **_: Console(file=drawn, force_terminal=True, width=100)
    )
    monkeypatch.setenv("CLUSTERBENCH_API_KEY", "k3y")
    assert cli.main(["run", "--url", "http://test", "--init", "random"]) == 0
    out, err = capsys.readouterr()
    assert out == table
    assert f"benchmark {ID}" in err
    # The bar is drawn from the first report and left at the last (the job's total).
    assert "fitting 0/3" in drawn.getvalue()
    assert "fitting 3/3" in drawn.getvalue()
    assert {r.headers["authorization"] for r in script.requests} == {"Bearer k3y"}
    assert script.requests[-1].headers["accept"] == "text/plain"
    assert orjson.loads(script.requests[0].content) == {
        "dataset": "digits",
        "strategies": ["random"],
    }


@pytest.mark.server
def test_a_session_sweep_report_list_delete(server: ServiceProcess, tmp_path: Path) -> None:
    # Check a user's session with the command alone: upload a file (named after it), sweep
    # it (JSON), benchmark it with flags from the request model (--n-init, --no-scale),
    # save its report, list it, delete it and the dataset. Before, only run, upload, plot
    # and serve existed.
    url = ("--url", server.url)
    path = tmp_path / "measurements.csv"  # numbers no other test uploads: a new dataset
    rows = [f"{i % 5}.75,{(i * 7) % 13}.5,{'xyz'[i % 3]}" for i in range(45)]
    path.write_text("\n".join(["u,v,group", *rows]) + "\n")
    uploaded = clusterbench("upload", str(path), "--label-column", "group", "--json", *url,
                            cwd=tmp_path)  # fmt: skip
    assert uploaded.returncode == 0, uploaded.stderr
    info = orjson.loads(uploaded.stdout)
    assert info["name"] == "measurements.csv"

    swept = clusterbench("sweep", "--dataset", info["id"], "--k", "2", "3", "4", "--json",
                         *url, cwd=tmp_path)  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    sweep = orjson.loads(swept.stdout)
    assert sorted({point["k"] for point in sweep["results"]}) == [2, 3, 4]
    with Client(server.url) as client:
        assert client.get("sweep", sweep["id"]).model_dump(mode="json") == {
            **sweep,
            "cached": True,
        }
    table = clusterbench("sweep", "--dataset", info["id"], "--k", "2", "3", "4", *url,
                         cwd=tmp_path)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "silhouette" in table.stdout
    assert "k-means++" in table.stdout

    ran = clusterbench("run", "--dataset", info["id"], "--n-clusters", "3", "--n-init", "2",
                       "--no-scale", "--init", "k-means++", "--json", *url,
                       cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    result = orjson.loads(ran.stdout)
    assert result["params"]["scale"] is False
    assert result["params"]["strategies"][0]["n_init"] == 2

    reported = clusterbench("report", result["id"], "-o", "report.html", *url, cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")

    listed = clusterbench("list", "benchmarks", *url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert result["id"] in listed.stdout

    for what, item in (("benchmark", result["id"]), ("dataset", info["id"])):
        deleted = clusterbench("delete", what, item, *url, cwd=tmp_path)
        assert deleted.returncode == 0, deleted.stderr
    gone = clusterbench("report", result["id"], *url, cwd=tmp_path)
    assert gone.returncode == 1
    assert "no benchmark with id" in gone.stderr


def test_errors_name_the_commands_flags(tmp_path: Path) -> None:
    # Check that a bad value is refused before any request, naming the flag (--n-clusters),
    # not the API field (n_clusters), and that a problem's detail names flags too.
    bad = clusterbench("run", "--n-clusters", "1", "--url", "http://127.0.0.1:1", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("clusterbench: error: --n-clusters: ")
    assert cli.name_flags("n_clusters (5) is larger than `k`") == (
        "--n-clusters (5) is larger than --k"
    )


def test_request_flags_are_the_request_models_fields() -> None:
    # Check that every field a request model documents is a flag of its command, so that a
    # field added to the model reaches the command without an edit.
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command, kind in (("run", "benchmark"), ("sweep", "sweep"), ("stability", "stability")):
        flags = set(commands[command]._option_string_actions)
        model = KINDS[kind].request
        for name in model.model_json_schema()["properties"]:
            if name not in DATA_FIELDS:
                assert flag_of(name) in flags, (command, name)
    assert "--random-state" not in set(commands["stability"]._option_string_actions)
    assert "--log-level" in commands["serve"]._option_string_actions
