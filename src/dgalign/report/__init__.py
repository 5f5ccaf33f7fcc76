"""Reports of a sweep directory (ours or DomainBed's): tables per selection method in Markdown,
LaTeX or CSV, plots, and the ranked configurations of one test environment.

`make_report(dir)` returns the text `dgalign report DIR` prints.
"""

from __future__ import annotations

from pathlib import Path

from dgalign.report.render import FORMATS, render
from dgalign.report.runs import Run, load_runs, report_records
from dgalign.report.tables import Cell, Table, build_tables
from dgalign.runs.state import JobState, count_states, format_counts
from dgalign.selection import get_methods


def summary_line(sweep_dir: str | Path, runs: list[Run], include_incomplete: bool) -> str:
    """`Report of DIR: 48 runs (47 done, 1 failed); 188 records used`."""
    counts = count_states([r.state for r in runs])
    counts.pop(JobState.NOT_LAUNCHED)
    states = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or format_counts(counts)
    used = len(report_records(runs, include_incomplete))
    return f"Report of {sweep_dir}: {len(runs)} runs ({states}); {used} records used"


def make_sections(
    runs: list[Run], selection: str = "all", include_incomplete: bool = False
) -> list[tuple[str, list[Table]]]:
    """(method name, tables) for each selection method asked for."""
    return [
        (method.name, build_tables(runs, method, include_incomplete))
        for method in get_methods(selection)
    ]


def make_report(
    sweep_dir: str | Path,
    fmt: str = "markdown",
    selection: str = "all",
    include_incomplete: bool = False,
) -> str:
    """The report of `sweep_dir` as text."""
    from dgalign.errors import ConfigError

    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    runs = load_runs(sweep_dir)
    sections = make_sections(runs, selection, include_incomplete)
    return render(sections, fmt, summary_line(sweep_dir, runs, include_incomplete))


__all__ = ["FORMATS", "Cell", "Table", "build_tables", "load_runs", "make_report", "make_sections"]
