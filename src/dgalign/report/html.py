"""`dgalign report DIR --format html`: one self-contained HTML page (plots embedded as PNG data
URIs, no script, no external file), readable offline and shareable as one file.

For a sweep (ours or DomainBed's): the tables of every selection method asked for, per dataset
and the averages, with their numbered notes on missing or partial cells as footnotes; a bar
chart per dataset table that has a result and the training curves per dataset
(`report.plots`); and, per selection method, the top hyper-parameter configurations of every
(dataset, algorithm, test env, trial) (`report.top`). For a `dgalign reproduce cmnist`
directory: its report.md (table beside the paper's numbers, cost, FGSM;
`experiments.cmnist_report`) with its plots embedded.
"""

from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path

from dgalign.errors import ConfigError
from dgalign.report.render import cell_text
from dgalign.report.runs import Run, algorithm_names, environment_names, with_swa_runs
from dgalign.report.tables import Cell, Table
from dgalign.report.top import rank_group, ranking_table
from dgalign.selection import get_methods, group_records

TOP_N = 5  # configurations shown per (dataset, algorithm, test env, trial)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f5; }
td.missing { color: #b00020; font-weight: bold; }
ol.notes { font-size: 0.85em; color: #444; }
img { max-width: min(100%, 760px); display: block; margin: 0.5em 0; border: 1px solid #eee; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
nav ul { columns: 2; }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def image_tag(path: Path, alt: str) -> str:
    """An <img> holding the PNG at `path` as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def table_html(table: Table, note_prefix: str) -> str:
    """One results table: cells as `cell_text` prints them (missing ones marked), each note
    mark a link to its footnote."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["Algorithm", *table.col_labels])
    rows = []
    for label, row in zip(table.row_labels, table.cells, strict=True):
        cells = "".join(_cell_html(c, note_prefix) for c in row)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    out = [
        f'<table class="results"><thead><tr>{head}</tr></thead>',
        f"<tbody>{''.join(rows)}</tbody></table>",
    ]
    if table.notes:
        items = "".join(
            f'<li id="{note_prefix}-{i}">{html.escape(n)}</li>'
            for i, n in enumerate(table.notes, 1)
        )
        out.append(f'<ol class="notes">{items}</ol>')
    return "\n".join(out)


def _cell_html(cell: Cell, note_prefix: str) -> str:
    text = html.escape(cell_text(Cell(cell.mean, cell.err)).replace("+/-", "±"))
    marks = ",".join(f'<a href="#{note_prefix}-{n}">{n}</a>' for n in cell.notes)
    sup = f"<sup>{marks}</sup>" if marks else ""
    css = ' class="missing"' if cell.mean is None else ""
    return f"<td{css}>{text}{sup}</td>"


def _top_section(runs: list[Run], method, include_incomplete: bool) -> str:
    """The ranked configurations (best TOP_N) of every group, under `method`."""
    from dgalign.report.runs import report_records

    groups = group_records(report_records(with_swa_runs(runs), include_incomplete))
    parts = []
    for (trial, dataset, algorithm, env), records in sorted(groups.items()):
        ranked = rank_group(method, records)[:TOP_N]
        if not ranked:
            continue
        env_name = environment_names(dataset, runs)[env]
        head, rows = ranking_table(ranked)
        parts.append(
            f"<h4>{html.escape(f'{algorithm} on {dataset}, test env {env_name}, trial {trial}')}"
            f"</h4>\n{simple_table(head, rows)}"
        )
    if not parts:
        return "<p>No finished run has a result under this method.</p>"
    return "\n".join(parts)


def simple_table(head: list[str], rows: list[list[str]]) -> str:
    """A plain HTML table of strings."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def sweep_page(
    runs: list[Run],
    sections: list[tuple[str, list[Table]]],
    header: str,
    selection: str = "all",
    include_incomplete: bool = False,
) -> str:
    """The HTML page of a sweep: `sections` as `report.make_sections` builds them, `header`
    the summary line."""
    from dgalign.report.plots import bar_chart, training_curves

    body = [f"<h1>{html.escape(header)}</h1>"]
    toc = [
        f'<li><a href="#{_anchor("sel " + name)}">Model selection: {html.escape(name)}</a>'
        for name, _ in sections
    ]
    toc += [
        '<li><a href="#curves">Training curves</a>',
        '<li><a href="#top">Top hyper-parameters</a>',
    ]
    body.append(f"<nav><ul>{''.join(toc)}</ul></nav>")
    datasets: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dgalign-html-") as tmp:
        for s, (name, tables) in enumerate(sections):
            body.append(
                f'<h2 id="{_anchor("sel " + name)}">Model selection: {html.escape(name)}</h2>'
            )
            for t, table in enumerate(tables):
                title = table.dataset or "Averages"
                body.append(f"<h3>{html.escape(title)}</h3>")
                body.append(table_html(table, f"note-{s}-{t}"))
                if table.dataset is None:
                    continue
                if table.dataset not in datasets:
                    datasets.append(table.dataset)
                if any(c.mean is not None for row in table.cells for c in row):
                    png = bar_chart(table, Path(tmp) / f"bars-{s}-{t}.png")
                    body.append(image_tag(png, f"{table.dataset}: {name}"))
        body.append('<h2 id="curves">Training curves</h2>')
        body.append(
            "<p>Mean training-environment validation (<code>out</code>) accuracy against the "
            "step, over the finished single-test-environment runs (shaded: standard error).</p>"
        )
        drawn = 0
        for i, dataset in enumerate(datasets):
            png = training_curves(runs, dataset, algorithm_names(runs), Path(tmp) / f"c{i}.png")
            if png is not None:
                body.append(image_tag(png, f"{dataset}: training curves"))
                drawn += 1
        if not drawn:
            body.append("<p>No finished run has records yet.</p>")
    body.append('<h2 id="top">Top hyper-parameters</h2>')
    body.append(
        f"<p>The best {TOP_N} configurations of each algorithm, dataset, test environment and "
        "trial, ranked by each selection method's validation accuracy (accuracies in %).</p>"
    )
    for method in get_methods(selection):
        body.append(
            f"<details><summary>{html.escape(method.name)}</summary>\n"
            f"{_top_section(runs, method, include_incomplete)}\n</details>"
        )
    return page(header, "\n".join(body))


def reproduction_page(root: str | Path) -> str:
    """The HTML page of a `dgalign reproduce cmnist` directory, from its report.md and PNGs.
    ConfigError when the report has not been written yet."""
    import markdown

    root = Path(root)
    report = root / "report.md"
    if not report.exists():
        raise ConfigError(
            f"{root} has no report.md yet; write it with `dgalign reproduce cmnist "
            f"--report-only --output-dir {root}` (and the options of the run)"
        )
    text = report.read_text()
    title = text.splitlines()[0].lstrip("# ").strip() if text else str(root)
    body = markdown.markdown(text, extensions=["tables"], output_format="html")

    def embed(match: re.Match) -> str:
        alt, name = match.group(1), match.group(2)
        path = root / name
        if not path.is_file():
            return f"<p><em>missing plot {html.escape(name)}</em></p>"
        return image_tag(path, alt)

    body = re.sub(r'<img alt="([^"]*)" src="([^"]+\.png)"\s*/?>', embed, body)
    return page(title, body)
