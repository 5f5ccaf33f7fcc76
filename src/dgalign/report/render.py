"""Tables as text: Markdown (aligned, readable in a terminal), LaTeX (booktabs, as DomainBed
prints them) and CSV (one row per cell, for scripts)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable

from dgalign.report.tables import Cell, Table

FORMATS = ("markdown", "latex", "csv")


def cell_text(cell: Cell, latex: bool = False) -> str:
    """`71.2 +/- 0.4`, `70.1` (an average of means) or `X`; notes as ` [1,2]` or `$^{1,2}$`."""
    if cell.mean is None:
        text = "X"
    elif cell.err is None:
        text = f"{cell.mean:.1f}"
    else:
        pm = "$\\pm$" if latex else "+/-"
        text = f"{cell.mean:.1f} {pm} {cell.err:.1f}"
    if cell.notes:
        marks = ",".join(map(str, cell.notes))
        text += f"$^{{{marks}}}$" if latex else f" [{marks}]"
    return text


def markdown_table(table: Table) -> str:
    header = ["Algorithm", *table.col_labels]
    rows = [
        [label, *(cell_text(c) for c in row)]
        for label, row in zip(table.row_labels, table.cells, strict=True)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in rows]
    if table.notes:
        out.append("")
        out += [f"[{i}] {note}" for i, note in enumerate(table.notes, 1)]
    return "\n".join(out)


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", "\\textbackslash{}"),
        ("_", "\\_"),
        ("%", "\\%"),
        ("&", "\\&"),
        ("#", "\\#"),
        ("$", "\\$"),
    ):
        text = text.replace(char, escaped)
    return text


def latex_table(table: Table) -> str:
    labels = ["\\textbf{Algorithm}", *(f"\\textbf{{{_latex_escape(c)}}}" for c in table.col_labels)]
    out = [
        "\\begin{center}",
        "\\adjustbox{max width=\\textwidth}{%",
        "\\begin{tabular}{l" + "c" * len(table.col_labels) + "}",
        "\\toprule",
        " & ".join(labels) + " \\\\",
        "\\midrule",
    ]
    for label, row in zip(table.row_labels, table.cells, strict=True):
        out.append(" & ".join([_latex_escape(label), *(cell_text(c, True) for c in row)]) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}}", "\\end{center}"]
    if table.notes:
        out.append("{\\footnotesize")
        out += [f"$^{{{i}}}$ {_latex_escape(n)}\\\\" for i, n in enumerate(table.notes, 1)]
        out.append("}")
    return "\n".join(out)


def _render(
    sections: Iterable[tuple[str, list[Table]]],
    preamble: list[str],
    method_heading: Callable[[str], str],
    table_heading: Callable[[str], str],
    render_table: Callable[[Table], str],
) -> str:
    """The preamble, then per selection method a heading and each of its tables under its own
    heading (a dataset's name, or "Averages")."""
    parts = list(preamble)
    for method_name, tables in sections:
        parts.append(method_heading(method_name))
        for table in tables:
            parts.append(table_heading(table.dataset or "Averages"))
            parts.append(render_table(table))
    return "\n\n".join(parts) + "\n"


def render_markdown(sections: Iterable[tuple[str, list[Table]]], header: str) -> str:
    return _render(
        sections,
        [f"# {header}"],
        lambda name: f"## Model selection: {name}",
        lambda name: f"### {name}",
        markdown_table,
    )


def render_latex(sections: Iterable[tuple[str, list[Table]]], header: str) -> str:
    return _render(
        sections,
        [f"% {header}", "% needs \\usepackage{booktabs} and \\usepackage{adjustbox}"],
        lambda name: f"\\subsection{{Model selection: {_latex_escape(name)}}}",
        lambda name: f"\\subsubsection{{{_latex_escape(name)}}}",
        latex_table,
    )


CSV_COLUMNS = [
    "selection",
    "table",
    "algorithm",
    "column",
    "mean",
    "stderr",
    "n_trials",
    "text",
    "notes",
]


def render_csv(sections: Iterable[tuple[str, list[Table]]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for _, tables in sections:
        for table in tables:
            for label, row in zip(table.row_labels, table.cells, strict=True):
                for column, cell in zip(table.col_labels, row, strict=True):
                    writer.writerow(
                        [
                            table.method.key,
                            table.dataset or "Averages",
                            label,
                            column,
                            "" if cell.mean is None else f"{cell.mean:.4f}",
                            "" if cell.err is None else f"{cell.err:.4f}",
                            "" if cell.mean is not None and cell.err is None else cell.n,
                            cell_text(Cell(cell.mean, cell.err)),
                            " | ".join(table.notes[i - 1] for i in cell.notes),
                        ]
                    )
    return buffer.getvalue()


def render(sections: list[tuple[str, list[Table]]], fmt: str, header: str) -> str:
    """The report in format `fmt` (markdown, latex or csv)."""
    if fmt == "markdown":
        return render_markdown(sections, header)
    if fmt == "latex":
        return render_latex(sections, header)
    return render_csv(sections)
