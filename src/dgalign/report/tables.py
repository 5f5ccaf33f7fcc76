"""Results tables with DomainBed's numbers, plus notes saying why a cell is missing or partial.

Per dataset: test accuracy per algorithm and test environment, mean +/- standard error over
trials of the selected configuration's accuracy (`selection.mean_and_stderr`), and the
average of the means (X if any is missing). Averages: per algorithm and dataset, the mean over
trials of each trial's mean over the test envs it has, then the average over datasets. Every
number equals DomainBed's `collect_results`; a cell that is X, or computed from fewer runs
than the sweep holds, carries a note listing the jobs that are not done and their state.
Runs with weight-average accuracies (`dgalign train --swa`) add an "<algorithm> + SWA" row
after the algorithm's (`runs.with_swa_runs`), selected by the same method on those accuracies.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dgalign.report.runs import (
    Run,
    RunKey,
    algorithm_names,
    dataset_names,
    environment_names,
    report_records,
    with_swa_runs,
)
from dgalign.runs.state import JobState
from dgalign.selection import (
    GroupKey,
    LeaveOneOutSelectionMethod,
    SelectionMethod,
    group_records,
    mean_and_stderr,
)


@dataclass
class Cell:
    """One table entry: mean and standard error in percent (err None for averages of means),
    or missing (`mean` None, shown as X); `notes` are 1-based indices into the table's notes."""

    mean: float | None = None
    err: float | None = None
    n: int = 0
    notes: list[int] = field(default_factory=list)


@dataclass
class Table:
    """A titled table of cells with row and column labels and numbered notes."""

    title: str
    method: type[SelectionMethod]
    dataset: str | None  # None for the averages table
    row_labels: list[str]
    col_labels: list[str]
    cells: list[list[Cell]]
    notes: list[str] = field(default_factory=list)

    def add_note(self, text: str) -> int:
        if text not in self.notes:
            self.notes.append(text)
        return self.notes.index(text) + 1


def _average_cell(cells: list[Cell]) -> Cell:
    """The Avg column: the mean of the means, or X (with the missing cells' notes)."""
    if any(c.mean is None for c in cells) or not cells:
        notes = sorted({n for c in cells if c.mean is None for n in c.notes})
        return Cell(notes=notes)
    return Cell(mean=sum(c.mean for c in cells) / len(cells))


class _Index:
    """What the sweep holds, to explain missing results: run states by key, trials per
    dataset, hparams seeds per (dataset, algorithm), datasets with pair runs."""

    def __init__(self, runs: list[Run]) -> None:
        self.states: dict[RunKey, list[JobState]] = defaultdict(list)
        self.trials: dict[str, set[int]] = defaultdict(set)
        self.hseeds: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.with_pairs: set[str] = set()
        for run in runs:
            key = run.key
            if key is None:
                continue
            dataset, algorithm, trial, envs, hseed = key
            self.states[key].append(run.state)
            self.trials[dataset].add(trial)
            self.hseeds[(dataset, algorithm)].add(hseed)
            if len(envs) == 2:
                self.with_pairs.add(dataset)

    def state(self, key: RunKey) -> JobState:
        states = self.states.get(key)
        if not states:
            return JobState.NOT_LAUNCHED
        return JobState.DONE if JobState.DONE in states else states[0]


def _describe_missing(missing: list[tuple[tuple[int, ...], JobState]]) -> str:
    """`1 failed, 2 not launched job(s): test envs [2], [0, 2]`."""
    counts: dict[JobState, int] = defaultdict(int)
    for _, state in missing:
        counts[state] += 1
    states = ", ".join(f"{n} {s.value}" for s, n in counts.items())
    envs = sorted({e for e, _ in missing})
    return f"{states} job(s) (test envs {', '.join(str(list(e)) for e in envs)})"


class TableBuilder:
    """Builds the tables of one selection method from the runs of a sweep."""

    def __init__(
        self, runs: list[Run], method: type[SelectionMethod], include_incomplete: bool = False
    ) -> None:
        runs = with_swa_runs(runs)
        self.runs = runs
        self.method = method
        self.index = _Index(runs)
        groups = group_records(report_records(runs, include_incomplete))
        self.accs: dict[GroupKey, float] = {}
        for key, records in groups.items():
            acc = method.sweep_acc(records)
            if acc is not None:
                self.accs[key] = acc
        self.algorithms = algorithm_names(runs)
        self.datasets = dataset_names(runs)

    def tables(self) -> list[Table]:
        tables = [self.dataset_table(d) for d in self.datasets]
        return [*tables, self.averages_table(tables)]

    def _expected(self, dataset: str, env: int, n_envs: int) -> list[tuple[int, ...]]:
        sets = [(env,)]
        if self.method is LeaveOneOutSelectionMethod:
            sets += [tuple(sorted((env, j))) for j in range(n_envs) if j != env]
        return sets

    def _reason(self, dataset: str, algorithm: str, env: int, n_envs: int) -> str | None:
        """Why the cell is missing or partial, per trial; None when it is complete."""
        if not self.index.hseeds[(dataset, algorithm)]:
            return f"no runs of {algorithm} on {dataset}"
        parts = []
        for trial in sorted(self.index.trials[dataset]):
            missing = [
                (envs, state)
                for hseed in sorted(self.index.hseeds[(dataset, algorithm)])
                for envs in self._expected(dataset, env, n_envs)
                if (state := self.index.state((dataset, algorithm, trial, envs, hseed)))
                is not JobState.DONE
            ]
            has = (trial, dataset, algorithm, env) in self.accs
            if has and not missing:
                continue
            if missing:
                lead = "selected among finished runs only" if has else "no result"
                parts.append(f"trial {trial}: {lead}: {_describe_missing(missing)}")
            else:
                parts.append(f"trial {trial}: no checkpoint this selection method can use")
        return "; ".join(parts) or None

    def dataset_table(self, dataset: str) -> Table:
        names = environment_names(dataset, self.runs)
        title = f"Dataset: {dataset}, model selection method: {self.method.name}"
        table = Table(title, self.method, dataset, list(self.algorithms), [*names, "Avg"], [])
        no_pairs = (
            self.method is LeaveOneOutSelectionMethod and dataset not in self.index.with_pairs
        )
        for algorithm in self.algorithms:
            row = []
            for env, name in enumerate(names):
                trial_accs = [
                    acc
                    for (t, d, a, e), acc in sorted(self.accs.items())
                    if (d, a, e) == (dataset, algorithm, env)
                ]
                summary = mean_and_stderr(trial_accs)
                cell = Cell(*summary, len(trial_accs)) if summary else Cell()
                if no_pairs:
                    cell.notes.append(
                        table.add_note(
                            "no runs with two test environments, which leave-one-domain-out "
                            "needs: launch the sweep without --single-test-envs"
                        )
                    )
                elif (reason := self._reason(dataset, algorithm, env, len(names))) is not None:
                    if not reason.startswith("no runs"):
                        reason = f"{algorithm}, test env {name}: {reason}"
                    cell.notes.append(table.add_note(reason))
                row.append(cell)
            row.append(_average_cell(row))
            table.cells.append(row)
        return table

    def averages_table(self, dataset_tables: list[Table]) -> Table:
        title = f"Averages, model selection method: {self.method.name}"
        table = Table(title, self.method, None, list(self.algorithms), [*self.datasets, "Avg"], [])
        by_dataset = {t.dataset: t for t in dataset_tables}
        for i, algorithm in enumerate(self.algorithms):
            row = []
            for dataset in self.datasets:
                per_trial: dict[int, list[float]] = defaultdict(list)
                for (t, d, a, _), acc in sorted(self.accs.items()):
                    if (d, a) == (dataset, algorithm):
                        per_trial[t].append(acc)
                trial_means = [sum(v) / len(v) for _, v in sorted(per_trial.items())]
                summary = mean_and_stderr(trial_means)
                cell = Cell(*summary, len(trial_means)) if summary else Cell()
                source = by_dataset[dataset].cells[i][:-1]
                if cell.mean is None:
                    note = f"{dataset}: no result; see the {dataset} table"
                    cell.notes.append(table.add_note(note))
                elif any(c.notes or c.mean is None for c in source):
                    cell.notes.append(
                        table.add_note(
                            f"{dataset}: some results missing or partial (see the {dataset} "
                            "table); each trial averages the test envs it has, as DomainBed does"
                        )
                    )
                row.append(cell)
            row.append(_average_cell(row))
            table.cells.append(row)
        return table


def build_tables(
    runs: list[Run], method: type[SelectionMethod], include_incomplete: bool = False
) -> list[Table]:
    """One table per dataset and the averages table, for `method`."""
    return TableBuilder(runs, method, include_incomplete).tables()
