"""Plots of a sweep as PNG files (matplotlib, Agg backend: no display needed).

- `accuracy_<selection>_<dataset>.png`: per test environment (and the average), one bar per
  algorithm with the standard error over trials as error bars; missing results marked X.
- `curves_<dataset>.png`: mean `out` accuracy of the training environments against the step,
  per algorithm, averaged over the finished single-test-env runs (shaded: standard error).

Runs with weight-average accuracies also plot "<algorithm> + SWA" (`runs.with_swa_runs`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from dgalign.report.runs import SWA_SUFFIX, Run, with_swa_runs
from dgalign.report.tables import Table
from dgalign.runs.state import JobState
from dgalign.selection import n_envs
from dgalign.utils.plotting import pyplot
from dgalign.utils.text import slug


def bar_chart(table: Table, path: Path) -> Path:
    """Grouped bars of one dataset table."""
    plt = pyplot()
    n_alg = max(1, len(table.row_labels))
    width = 0.8 / n_alg
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(table.col_labels) * max(1, n_alg / 2), 3.6))
    for i, (label, row) in enumerate(zip(table.row_labels, table.cells, strict=True)):
        xs = [j + (i - (n_alg - 1) / 2) * width for j in range(len(row))]
        heights = [c.mean if c.mean is not None else 0.0 for c in row]
        errs = [c.err if c.err is not None else math.nan for c in row]  # no bar on Avg
        bars = ax.bar(xs, heights, width, yerr=errs, capsize=3, label=label)
        for x, cell in zip(xs, row, strict=True):
            if cell.mean is None:
                color = bars.patches[0].get_facecolor()
                ax.text(x, 1.0, "X", ha="center", va="bottom", color=color)
    ax.set_xticks(range(len(table.col_labels)), table.col_labels)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("test environment")
    ax.set_ylim(0, 100)
    ax.set_title(f"{table.dataset}: {table.method.short}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curve_points(runs: list[Run], dataset: str) -> dict[str, dict[int, list[float]]]:
    """Per algorithm, per step: each finished single-test-env run's mean training-env `out`
    accuracy (percent)."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.key is None or run.key[0] != dataset or run.state is not JobState.DONE:
            continue
        if len(run.key[3]) != 1:
            continue
        for record in run.records:
            train = [i for i in range(n_envs(record)) if i not in run.key[3]]
            if train:
                value = sum(record[f"env{i}_out_acc"] for i in train) / len(train)
                points[run.key[1]][record["step"]].append(100 * value)
    return points


def training_curves(
    runs: list[Run], dataset: str, algorithms: list[str], path: Path
) -> Path | None:
    """Training curves of one dataset; None when no finished run has records. "X + SWA" is
    drawn right after X when its runs have weight-average accuracies."""
    points = curve_points(with_swa_runs(runs), dataset)
    algorithms = [n for a in algorithms for n in (a, a + SWA_SUFFIX) if not a.endswith(SWA_SUFFIX)]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for algorithm in [a for a in algorithms if a in points]:
        steps = sorted(points[algorithm])
        means, errs = [], []
        for step in steps:
            values = points[algorithm][step]
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / len(values)
            means.append(mean)
            errs.append(math.sqrt(var / len(values)))
        ax.plot(steps, means, marker="o", markersize=3, label=algorithm)
        ax.fill_between(
            steps,
            [m - e for m, e in zip(means, errs, strict=True)],
            [m + e for m, e in zip(means, errs, strict=True)],
            alpha=0.2,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training-env validation accuracy (%)")
    ax.set_title(f"{dataset}: training curves", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(
    runs: list[Run], sections: list[tuple[str, list[Table]]], plot_dir: Path, algorithms: list[str]
) -> list[Path]:
    """Every bar chart and training-curve plot; returns the files written."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    datasets: list[str] = []
    for _, tables in sections:
        for table in tables:
            if table.dataset is None:
                continue
            name = f"accuracy_{table.method.key}_{slug(table.dataset, '-')}.png"
            written.append(bar_chart(table, plot_dir / name))
            if table.dataset not in datasets:
                datasets.append(table.dataset)
    for dataset in datasets:
        path = training_curves(
            runs, dataset, algorithms, plot_dir / f"curves_{slug(dataset, '-')}.png"
        )
        if path is not None:
            written.append(path)
    return written
