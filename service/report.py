"""A benchmark, a sweep or a stability run as one self-contained HTML page: the tables,
the plot inline, a benchmark's cluster profiles, the parameters.

Strings only. Every value that came from a client (dataset names, feature
names, warnings) goes through :func:`html.escape`; the page loads nothing: the plot is a
``data:`` URL and the style is inline, so :data:`CONTENT_SECURITY_POLICY` forbids the rest.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from string import Template
from typing import Any

from pydantic import BaseModel

from service import stability, sweeps
from service.benchmark import TABLE_NAMES
from service.plot_text import subject
from service.schemas import BenchmarkResult, StabilityResult, StrategyResult, SweepResult

# What a report page shows: an answer of one of the three kinds.
Answer = BenchmarkResult | SweepResult | StabilityResult

# Nothing but the page itself, its inline style and its data: images.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
# The headers every page is answered with.
RESPONSE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
}

SCORES = ("homogeneity", "completeness", "v_measure", "ari", "ami", "silhouette")
HEADERS = ("init", "time", "inertia", "homo", "compl", "v-meas", "ARI", "AMI", "silhouette")

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: right; white-space: nowrap; }
summary { margin: 0.5em 0; cursor: pointer; }
th:first-child, td:first-child, .text, table.pairs td { text-align: left; }
code { font-size: 0.9em; }
img { max-width: 100%; }
</style>
</head>
<body>
<h1>$heading</h1>
<p>$what <code>$id</code></p>
$sections
</body>
</html>
""")


def _page(
    answer: Answer,
    described: dict[str, Any] | None,
    *,
    what: str,
    heading: str,
    sections: list[str],
    params: dict[str, Any],
) -> str:
    """The page of an answer: ``sections`` (HTML already escaped), then its dataset
    (:func:`dataset_shown`), ``params`` and versions. ``what`` names the result
    ("Sweep"), ``heading`` what was done ("Choosing k"), both plain text."""
    dataset = dataset_shown(answer, described)
    name = subject(dataset["name"], dataset["id"])
    appendix = [
        _section("Dataset", f'<table id="dataset" class="pairs">\n{_pairs(dataset)}\n</table>'),
        _section("Parameters", f'<table id="params" class="pairs">\n{_pairs(params)}\n</table>'),
        _section(
            "Versions",
            f'<table id="versions" class="pairs">\n{_pairs(answer.versions)}\n</table>',
        ),
    ]
    return PAGE.substitute(
        title=html.escape(f"{what} {answer.id[:12]} on {name}"),
        heading=html.escape(f"{heading} on {name}"),
        what=html.escape(what),
        id=html.escape(answer.id),
        sections="\n".join(s for s in [*sections, *appendix] if s),
    )


def _table(
    table_id: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    text_columns: Sequence[int] = (),
) -> str:
    """A table of plain-text cells (escaped here): numbers aligned right, the first
    column and the ``text_columns`` left."""

    def cell(j: int, tag: str, value: str) -> str:
        kind = ' class="text"' if j in text_columns else ""
        return f"<{tag}{kind}>{html.escape(value)}</{tag}>"

    head = "".join(cell(j, "th", h) for j, h in enumerate(header))
    body = "\n".join(
        "<tr>" + "".join(cell(j, "td", value) for j, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def _section(heading: str, content: str) -> str:
    return f"<h2>{html.escape(heading)}</h2>\n{content}"


def _warnings(items: list[str]) -> str:
    if not items:
        return ""
    listed = "".join(f"<li>{html.escape(str(w))}</li>" for w in items)
    return _section("Warnings", f"<ul>\n{listed}\n</ul>")


def _plot(png: bytes | None, alt: str, missing: str) -> str:
    if png is None:
        return f"<p>{html.escape(missing)}</p>"
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img id="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


SCORE_SPACES = {
    "input": "on the data as given (before scaling), as the seed does",
    "clustered": "in the space KMeans clustered (after scaling and every preprocessing step)",
}


def _score_space(answer: Answer) -> str:
    space = answer.score_space
    return (
        "<p>Silhouette, Davies-Bouldin and Calinski-Harabasz are measured "
        f'<span id="score-space">{html.escape(SCORE_SPACES.get(space, space))}</span>.</p>'
    )


def dataset_shown(answer: Answer, described: dict[str, Any] | None) -> dict[str, Any]:
    """An answer's dataset summary, with the name, format and column names the caller
    gave it (``described``: as ``GET /v1/datasets/{id}`` answers; None once deleted)."""
    shown = _fields(answer.dataset)
    if described is not None:
        shown["name"] = described.get("name") or shown.get("name")
        shown["format"] = described.get("format")
        if described.get("feature_names"):
            shown["columns"] = described["feature_names"]
        if described.get("sparse"):
            shown["density"] = described["density"]
    return shown


def _text(value: Any) -> str:
    """A value as escaped text: null as ``-``, list items joined by semicolons."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{_text(k)}={_text(v)}" for k, v in value.items())
    return html.escape(str(value))


def _pairs(items: dict[str, Any]) -> str:
    return "\n".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{_text(value)}</td></tr>"
        for key, value in items.items()
    )


def _fields(model: BaseModel) -> dict[str, Any]:
    """A model's fields as its stored answer has them (JSON values; a field the answer
    was stored without stays out), for a table of pairs."""
    return model.model_dump(mode="json", exclude_unset=True)


def result_cells(result: StrategyResult) -> list[str]:
    """One strategy's row as the seed's table prints it (unescaped)."""
    values = [getattr(result, k) for k in SCORES]
    scores = ["-" if v is None else f"{v:.3f}" for v in values]
    name = TABLE_NAMES.get(result.init, result.init)
    return [name, f"{result.fit_time:.3f}s", f"{result.inertia:.0f}", *scores]


def profile_table(clusters: list[dict[str, Any]]) -> list[list[str]]:
    """A model's cluster profiles as rows of text (unescaped): a header naming each
    cluster with its size, then one row per feature of ``mean ± std`` per cluster."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    header = ["feature", *(f"{c['label']} (n={c['size']})" for c in clusters)]
    features = list(clusters[0]["mean"]) if clusters else []
    return [header] + [
        [name, *(f"{number(c['mean'][name])} ± {number(c['std'][name])}" for c in clusters)]
        for name in features
    ]


# Profiles with more features than this start folded.
PROFILES_SHOWN = 12


def _profiles(profiles: dict[str, list[dict[str, Any]] | None]) -> str:
    tables = []
    for init, clusters in profiles.items():
        if clusters is not None:
            header, *rows = profile_table(clusters)
            table = _table(f"profiles-{init}", header, rows)
            # Folded past a screenful of features (digits: 64 rows per strategy).
            shown = " open" if len(rows) <= PROFILES_SHOWN else ""
            summary = f"{init}: {len(rows)} features x {len(clusters)} clusters"
            tables.append(
                f"<details{shown}><summary>{html.escape(summary)}</summary>\n{table}\n</details>"
            )
    if not tables:
        return ""
    return _section(
        "Cluster profiles",
        "<p>Per cluster: its training rows, and each feature's mean ± standard deviation "
        "in the data's own units.</p>\n" + "\n".join(tables),
    )


def render_report(
    answer: BenchmarkResult,
    png: bytes | None,
    described: dict[str, Any] | None = None,
    profiles: dict[str, list[dict[str, Any]] | None] | None = None,
) -> str:
    """The page of a benchmark's answer and its plot ``png`` (None: data
    with one feature has no plot); ``described`` as for :func:`dataset_shown`;
    ``profiles`` are each strategy's cluster profiles
    (:meth:`service.benchmark.FittedModel.profiles`), by its init."""
    warnings = [
        *answer.warnings,
        *(f"{r.init}: {w}" for r in answer.results for w in r.warnings),
    ]
    plot = _plot(
        png,
        "KMeans decision boundaries on the PCA-reduced data, one panel per strategy",
        "No plot: the data has one feature.",
    )
    return _page(
        answer,
        described,
        what="Benchmark",
        heading="K-Means benchmark",
        sections=[
            _section(
                "Results",
                _table("results", HEADERS, [result_cells(r) for r in answer.results])
                + "\n"
                + _score_space(answer),
            ),
            _warnings(warnings),
            _section("Decision boundaries", plot),
            _profiles(profiles or {}),
        ],
        params={"n_clusters": answer.n_clusters, **_fields(answer.params)},
    )


def render_sweep_report(
    answer: SweepResult, png: bytes, described: dict[str, Any] | None = None
) -> str:
    """The page of a sweep's answer and its plot ``png``: each strategy's
    recommended k, the plot, the scores of each (k, strategy), the dataset and
    parameters."""
    recommended = _table(
        "recommended", ("strategy", *sweeps.RECOMMENDED), sweeps.recommended_cells(answer)
    )
    results = _table(
        "results",
        sweeps.TABLE_HEADER,
        [sweeps.row_cells(r) for r in answer.results],
        text_columns=(1,),
    )
    return _page(
        answer,
        described,
        what="Sweep",
        heading="Choosing k",
        sections=[
            _section(
                "Recommended k",
                recommended
                + "\n<p>The top-level <code>recommended_k</code> is the first strategy's.</p>",
            ),
            _section("Scores against k", _plot(png, "The scores against k", "")),
            _section(
                "Results",
                results
                + "\n<p>DB: Davies-Bouldin (lower is better); CH: Calinski-Harabasz.</p>\n"
                + _score_space(answer),
            ),
            _warnings(sweeps.all_warnings(answer)),
        ],
        params=_fields(answer.params),
    )


def render_stability_report(
    answer: StabilityResult, described: dict[str, Any] | None = None
) -> str:
    """The page of a stability run's answer: each strategy's mean ± standard
    deviation over the seeds, their agreement, the dataset and parameters."""
    seeds = answer.params.seeds
    summary = (
        f"<p>{len(seeds)} seed(s): <code>random_state</code> in {html.escape(str(seeds))}; "
        "mean ± standard deviation over the seeds, and the mean / minimum adjusted Rand "
        "index between the seeds' labelings.</p>"
    )
    results = _table(
        "results", stability.TABLE_HEADER, [stability.row_cells(r) for r in answer.results]
    )
    return _page(
        answer,
        described,
        what="Stability run",
        heading="Seed stability",
        sections=[
            _section("Results", f"{summary}\n{results}\n{_score_space(answer)}"),
            _warnings(stability.all_warnings(answer)),
        ],
        params={"n_clusters": answer.n_clusters, **_fields(answer.params)},
    )
