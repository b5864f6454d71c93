"""A benchmark as one self-contained HTML page: the table, the plot inline, the cluster
profiles, the parameters.

Standard library only. Every value that came from a client (dataset names, feature
names, warnings) goes through :func:`html.escape`; the page loads nothing: the plot is a
``data:`` URL and the style is inline, so :data:`CONTENT_SECURITY_POLICY` forbids the rest.
"""

from __future__ import annotations

import base64
import html
from string import Template
from typing import Any

from service.benchmark import TABLE_NAMES

# Nothing but the page itself, its inline style and its data: images.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

SCORES = ("homogeneity", "completeness", "v_measure", "ari", "ami", "silhouette")
HEADERS = ("init", "time", "inertia", "homo", "compl", "v-meas", "ARI", "AMI", "silhouette")

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Benchmark $short on $dataset_name</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { font-size: 0.9em; }
img { max-width: 100%; }
</style>
</head>
<body>
<h1>K-Means benchmark on $dataset_name</h1>
<p>Benchmark <code>$id</code></p>
<h2>Results</h2>
<table id="results">
<thead><tr>$header</tr></thead>
<tbody>
$rows
</tbody>
</table>
$warnings
<h2>Decision boundaries</h2>
$plot
$profiles
<h2>Dataset</h2>
<table id="dataset">
$dataset
</table>
<h2>Parameters</h2>
<table id="params">
$params
</table>
<h2>Versions</h2>
<table id="versions">
$versions
</table>
</body>
</html>
""")


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


def result_cells(result: dict[str, Any]) -> list[str]:
    """One strategy's row as the seed's table prints it (unescaped)."""
    scores = ["-" if result[k] is None else f"{result[k]:.3f}" for k in SCORES]
    name = TABLE_NAMES.get(result["init"], result["init"])
    return [name, f"{result['fit_time']:.3f}s", f"{result['inertia']:.0f}", *scores]


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


def _profiles_html(profiles: dict[str, list[dict[str, Any]] | None]) -> str:
    sections = []
    for init, clusters in profiles.items():
        if clusters is None:
            continue
        header, *rows = profile_table(clusters)
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        body = "\n".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in rows
        )
        sections.append(
            f'<h3>{html.escape(init)}</h3>\n<table class="profiles">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
        )
    if not sections:
        return ""
    return (
        "<h2>Cluster profiles</h2>\n<p>Per cluster: its training rows, and each feature's "
        "mean ± standard deviation in the data's own units.</p>\n" + "\n".join(sections)
    )


def render_report(
    data: dict[str, Any],
    png: bytes | None,
    profiles: dict[str, list[dict[str, Any]] | None] | None = None,
) -> str:
    """The page of a benchmark's JSON body ``data`` and its plot ``png`` (None: data
    with one feature has no plot); ``profiles`` are each strategy's cluster profiles
    (:meth:`service.benchmark.FittedModel.profiles`), by its init."""
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in result_cells(r)) + "</tr>"
        for r in data["results"]
    )
    warnings = [
        f"<li>{html.escape(str(r['init']))}: {html.escape(str(w))}</li>"
        for r in data["results"]
        for w in r.get("warnings", [])
    ]
    dataset = data["dataset"]
    name = dataset.get("name") or "client data"
    return PAGE.substitute(
        short=html.escape(data["id"][:12]),
        id=html.escape(data["id"]),
        dataset_name=html.escape(str(name)),
        header="".join(f"<th>{h}</th>" for h in HEADERS),
        rows=rows,
        warnings=f"<h2>Warnings</h2>\n<ul>\n{''.join(warnings)}\n</ul>" if warnings else "",
        plot="<p>No plot: the data has one feature.</p>"
        if png is None
        else '<img id="plot" alt="KMeans decision boundaries on the PCA-reduced data, '
        'one panel per strategy" src="data:image/png;base64,'
        + base64.b64encode(png).decode("ascii")
        + '">',
        profiles=_profiles_html(profiles or {}),
        dataset=_pairs(dataset),
        params=_pairs({"n_clusters": data["n_clusters"], **data["params"]}),
        versions=_pairs(data["versions"]),
    )
