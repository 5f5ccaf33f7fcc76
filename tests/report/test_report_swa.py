"""`dgalign report` on runs made with `dgalign train --swa`: an "<algorithm> + SWA" row, selected
by the same method on the weight average's accuracies (`swa_env{i}_{in,out}_acc`), in every
format and plot, the plain rows unchanged; runs without them get no such row."""

import csv
import io
import math
from pathlib import Path

import pytest

from dgalign.cli import main
from dgalign.report import build_tables, load_runs, make_report
from dgalign.report import plots as plots_module
from dgalign.report.runs import Run, environment_names, swa_record, with_swa_runs
from dgalign.report.top import top_hparams
from dgalign.runs.state import JobState
from dgalign.selection import (
    METHODS,
    IIDAccuracySelectionMethod,
    LeaveOneOutSelectionMethod,
    OracleSelectionMethod,
)
from dgalign.sweep.jobs import held_out_sets

GOLDEN = Path(__file__).parent / "golden"
SE2 = 100 * 0.005 / math.sqrt(2)
ERM_SWA = {("Debug28", "ERM"), ("PACS", "ERM")}


@pytest.fixture
def swa_sweep(tmp_path, make_golden_sweep):
    """The golden sweep (conftest) with the weight average's accuracies in ERM's runs."""
    return make_golden_sweep(tmp_path / "swa", swa=ERM_SWA)


def cells(table):
    return {
        (row, col): cell
        for row, cells_ in zip(table.row_labels, table.cells, strict=True)
        for col, cell in zip(table.col_labels, cells_, strict=True)
    }


def cell_view(table):
    """Every cell as (mean, err, n, note texts), by (row, column)."""
    return {
        key: (c.mean, c.err, c.n, [table.notes[i - 1] for i in c.notes])
        for key, c in cells(table).items()
    }


def test_swa_row_values_by_hand(swa_sweep):
    runs = load_runs(swa_sweep)
    debug, pacs, averages = build_tables(runs, IIDAccuracySelectionMethod)
    assert debug.row_labels == ["ERM", "ERM + SWA", "ZFake"]
    c = cells(debug)
    # on the average's accuracies training-domain validation picks h = 0 at step 10:
    # b + 0.03 + 0.02 e + 0.01 t
    s0 = c[("ERM + SWA", "0")]
    assert (s0.mean, s0.err, s0.n) == (pytest.approx(63.5), pytest.approx(SE2), 2)
    assert c[("ERM + SWA", "1")].mean == pytest.approx(65.5)
    # the failed run (trial 1, env 2, h1) is failed for the average too: same note, and h0
    # is the choice in both trials anyway
    s2 = c[("ERM + SWA", "2")]
    assert s2.mean == pytest.approx(67.5) and s2.n == 2
    assert debug.notes[s2.notes[0] - 1] == (
        "ERM + SWA, test env 2: trial 1: selected among finished runs only: 1 failed job(s) "
        "(test envs [2])"
    )
    assert c[("ERM + SWA", "Avg")].mean == pytest.approx((63.5 + 65.5 + 67.5) / 3)
    # the plain row is what it is without --swa (test_report_tables' hand values)
    assert c[("ERM", "0")].mean == pytest.approx(61.0)
    assert c[("ERM", "2")].mean == pytest.approx(64.75)
    assert cells(pacs)[("ERM + SWA", "S")].mean == pytest.approx(89.0)
    assert cells(pacs)[("ERM", "S")].mean == pytest.approx(86.5)
    a = cells(averages)
    trial0 = (0.63 + 0.65 + 0.67) / 3
    assert a[("ERM + SWA", "Debug28")].mean == pytest.approx(100 * (trial0 + trial0 + 0.01) / 2)
    assert a[("ERM + SWA", "PACS")].mean == pytest.approx(86.0)
    # the oracle picks h = 1 on the average (h = 0 on the plain model); loo picks h = 0
    oracle = cells(build_tables(runs, OracleSelectionMethod)[0])
    assert oracle[("ERM + SWA", "0")].mean == pytest.approx(63.0)
    assert oracle[("ERM", "0")].mean == pytest.approx(60.5)
    loo = cells(build_tables(runs, LeaveOneOutSelectionMethod)[0])
    assert loo[("ERM + SWA", "0")].mean == pytest.approx(63.5)
    assert loo[("ERM", "0")].mean == pytest.approx(61.0)


@pytest.mark.parametrize("swa", [ERM_SWA, {("Debug28", "ZFake")}], ids=["ERM", "ZFake-Debug28"])
@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
@pytest.mark.parametrize("include_incomplete", [False, True])
def test_swa_row_is_the_swa_values_as_a_separate_algorithm(
    tmp_path, make_golden_sweep, swa, fmt, include_incomplete
):
    """The report of runs with swa_* keys equals the report of a sweep where those values are
    the env* keys of separate runs of "<algorithm> + SWA" (same states), but for the summary
    line (which counts run directories)."""
    with_keys = make_golden_sweep(tmp_path / "a", swa=swa)
    reference = make_golden_sweep(tmp_path / "b", swa=swa, swa_as_algorithm=True)
    text = make_report(with_keys, fmt, include_incomplete=include_incomplete)
    expected = make_report(reference, fmt, include_incomplete=include_incomplete)
    assert " + SWA" in text
    if fmt != "csv":
        assert text.splitlines()[0].startswith(("# Report of", "% Report of"))
        text, expected = text.split("\n", 1)[1], expected.split("\n", 1)[1]
    assert text == expected
    for method in METHODS:
        tables = build_tables(load_runs(with_keys), method, include_incomplete)
        ref = build_tables(load_runs(reference), method, include_incomplete)
        assert [cell_view(t) for t in tables] == [cell_view(t) for t in ref]


def _csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_plain_rows_unchanged(swa_sweep):
    rows = _csv_rows(make_report(swa_sweep, "csv"))
    swa_rows = [r for r in rows if r["algorithm"].endswith(" + SWA")]
    assert {r["algorithm"] for r in swa_rows} == {"ERM + SWA"}  # ZFake has no swa keys
    plain = [r for r in rows if not r["algorithm"].endswith(" + SWA")]
    assert plain == _csv_rows((GOLDEN / "report.csv").read_text())
    # and the SWA cells differ from the plain ones
    by_key = {(r["selection"], r["table"], r["algorithm"], r["column"]): r["mean"] for r in rows}
    assert by_key[("training", "Debug28", "ERM + SWA", "0")] == "63.5000"
    assert by_key[("training", "Debug28", "ERM", "0")] == "61.0000"


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_no_swa_row_without_swa_keys(golden_sweep, fmt):
    assert "SWA" not in make_report(golden_sweep, fmt)
    runs = load_runs(golden_sweep)
    assert with_swa_runs(runs) == runs


def test_swa_twins_are_idempotent_and_mirror_every_run(swa_sweep):
    runs = load_runs(swa_sweep)
    twins = with_swa_runs(runs)
    assert with_swa_runs(twins) == twins
    erm = [r for r in runs if r.key[1] == "ERM"]
    swa = [r for r in twins if r.key[1] == "ERM + SWA"]
    # failed and running runs too, so their notes apply to the SWA row
    assert [(r.path, r.state, r.key[2:]) for r in swa] == [
        (r.path, r.state, r.key[2:]) for r in erm
    ]
    assert JobState.FAILED in {r.state for r in swa}


def test_swa_record():
    record = {
        "args": {"algorithm": "ERM", "dataset": "D"},
        "step": 5,
        "loss": 0.3,
        "env0_in_acc": 0.1,
        "env0_out_acc": 0.2,
        "swa_env0_in_acc": 0.7,
        "swa_env0_out_acc": 0.8,
    }
    twin = swa_record(record)
    assert twin == {
        "args": {"algorithm": "ERM + SWA", "dataset": "D"},
        "step": 5,
        "loss": 0.3,
        "env0_in_acc": 0.7,
        "env0_out_acc": 0.8,
    }
    assert record["args"]["algorithm"] == "ERM" and record["env0_in_acc"] == 0.1
    partial = {k: v for k, v in record.items() if k != "swa_env0_out_acc"}
    assert swa_record(partial) is None
    assert swa_record({k: v for k, v in record.items() if not k.startswith("swa_")}) is None


def test_unregistered_dataset_env_count_ignores_swa_keys():
    args = {"dataset": "Mystery", "algorithm": "ERM", "test_envs": [0], "trial_seed": 0}
    args["hparams_seed"] = 0
    record = {"args": args, "step": 0}
    for i in range(3):
        for split in ("in", "out"):
            record[f"env{i}_{split}_acc"] = record[f"swa_env{i}_{split}_acc"] = 0.5
    run = Run(Path("x"), args, JobState.DONE, [record])
    assert environment_names("Mystery", [run]) == ["env0", "env1", "env2"]


def test_top_hparams_of_the_average(swa_sweep):
    runs = load_runs(swa_sweep)
    ranking = top_hparams(runs, IIDAccuracySelectionMethod, "Debug28", "ERM + SWA", 2)
    assert [[r.hparams_seed for r in ranking[t]] for t in (0, 1)] == [[0, 1], [0]]
    assert ranking[0][0].test_acc == pytest.approx(0.67)
    plain = top_hparams(runs, IIDAccuracySelectionMethod, "Debug28", "ERM", 2)
    assert [[r.hparams_seed for r in plain[t]] for t in (0, 1)] == [[1, 0], [0]]


def test_plots_have_the_swa_algorithm(swa_sweep, swa_accuracies, tmp_path, monkeypatch, capsys):
    real = plots_module.pyplot()
    figures = {}

    class Recorder:
        """pyplot, keeping each figure (by its title) instead of closing it."""

        def __getattr__(self, name):
            return getattr(real, name)

        def close(self, fig):
            figures[fig.axes[0].get_title()] = fig

    monkeypatch.setattr(plots_module, "pyplot", Recorder)
    plot_dir = tmp_path / "plots"
    try:
        assert main(["report", str(swa_sweep), "--plots", "--plot-dir", str(plot_dir)]) == 0
        assert "8 plot(s) written" in capsys.readouterr().out

        def legend(title):
            return [t.get_text() for t in figures[title].axes[0].get_legend().get_texts()]

        bars = "Debug28: training-domain validation"
        assert legend(bars) == ["ERM", "ERM + SWA", "ZFake"]
        assert legend("Debug28: training curves") == ["ERM", "ERM + SWA", "ZFake"]
        assert legend("PACS: training curves") == ["ERM", "ERM + SWA"]
        # the SWA curve at step 10: mean over the finished single-test-env runs of the
        # average's mean training-env out accuracy
        expected = []
        for trial in (0, 1):
            for (env,) in held_out_sets(3, single_only=True):
                for hseed in (0, 1):
                    if (trial, env, hseed) == (1, 2, 1):
                        continue  # failed
                    accs = swa_accuracies("Debug28", "ERM", trial, hseed, [env], 10)
                    train = [accs[f"env{i}_out_acc"] for i in range(3) if i != env]
                    expected.append(100 * sum(train) / len(train))
        ax = figures["Debug28: training curves"].axes[0]
        line = next(x for x in ax.get_lines() if x.get_label() == "ERM + SWA")
        assert list(line.get_xdata()) == [0, 10]
        assert line.get_ydata()[1] == pytest.approx(sum(expected) / len(expected))
    finally:
        for fig in figures.values():
            real.close(fig)
