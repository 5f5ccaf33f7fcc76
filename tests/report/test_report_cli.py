"""`dgalign report` as a user runs it: formats, plots, top hyper-parameters, one-line errors."""

import pytest

from dgalign.cli import main


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_formats_and_output_file(golden_sweep, tmp_path, capsys):
    code, out, _ = run(["report", str(golden_sweep), "--selection", "oracle"], capsys)
    assert code == 0
    assert "test-domain validation set (oracle)" in out and "training-domain" not in out
    target = tmp_path / "report.csv"
    code, out, _ = run(
        ["report", str(golden_sweep), "--format", "csv", "--output", str(target)], capsys
    )
    assert code == 0 and target.read_text() == out
    assert out.splitlines()[0] == "selection,table,algorithm,column,mean,stderr,n_trials,text,notes"


def test_autolr_selection_is_shown_only_when_asked(golden_sweep, capsys):
    # the golden sweep has no full-data retrains: the method is listed, every cell missing
    code, out, _ = run(["report", str(golden_sweep), "--selection", "autolr"], capsys)
    assert code == 0
    assert "auto lr training-domain validation set" in out
    code, out, _ = run(["report", str(golden_sweep)], capsys)
    assert code == 0 and "auto lr" not in out


def test_plots_are_written(golden_sweep, tmp_path, capsys):
    plot_dir = tmp_path / "plots"
    code, out, _ = run(
        ["report", str(golden_sweep), "--plots", "--plot-dir", str(plot_dir)], capsys
    )
    assert code == 0 and f"8 plot(s) written to {plot_dir}" in out
    names = sorted(p.name for p in plot_dir.iterdir())
    assert names == [
        "accuracy_loo_Debug28.png",
        "accuracy_loo_PACS.png",
        "accuracy_oracle_Debug28.png",
        "accuracy_oracle_PACS.png",
        "accuracy_training_Debug28.png",
        "accuracy_training_PACS.png",
        "curves_Debug28.png",
        "curves_PACS.png",
    ]
    for path in plot_dir.iterdir():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_top_hparams_by_environment_name(golden_sweep, capsys):
    code, out, _ = run(
        [
            "report",
            str(golden_sweep),
            "--top-hparams",
            "--dataset",
            "PACS",
            "--algorithm",
            "ERM",
            "--test-env",
            "S",
            "--selection",
            "training",
        ],
        capsys,
    )
    assert code == 0
    assert "# Top hyper-parameters: ERM on PACS, test env S" in out
    assert "| 1    | 1            | 81.5    | 86.5     | 10" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "pdf"], "unknown --format 'pdf'; valid formats: markdown, latex, csv, html"),
        (["--selection", "best"], "unknown --selection 'best'; valid values: training, loo"),
        (["--dataset", "PACS"], "--dataset only applies with --top-hparams"),
        (["--top-hparams", "--dataset", "PACS"], "--top-hparams needs --algorithm, --test-env"),
        (
            ["--top-hparams", "--dataset", "PACS", "--algorithm", "ERM", "--test-env", "Z"],
            "--test-env 'Z' is not an environment of PACS (0=A, 1=C, 2=P, 3=S)",
        ),
        (
            ["--top-hparams", "--dataset", "PACS", "--algorithm", "IRM", "--test-env", "0"],
            "no runs of IRM on PACS; the sweep holds: Debug28/ERM, Debug28/ZFake, PACS/ERM",
        ),
    ],
)
def test_bad_input_is_one_line(golden_sweep, capsys, argv, message):
    code, _, err = run(["report", str(golden_sweep), *argv], capsys)
    assert code == 2
    assert err.startswith("dgalign: error: ") and message in err
    assert err.count("\n") == 1


def test_missing_and_empty_directories(tmp_path, capsys):
    code, _, err = run(["report", str(tmp_path / "nope")], capsys)
    assert code == 2 and "does not exist; pass the --output-dir of a sweep" in err
    (tmp_path / "empty" / "not-a-run").mkdir(parents=True)
    code, _, err = run(["report", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no runs in" in err and err.count("\n") == 1
