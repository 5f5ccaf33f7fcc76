"""Input the CLI used to accept silently and get wrong: now a one-line error, nothing written.

Before: `--output-dir ''` wrote run.json, model.pt and done into the current directory;
`--holdout-fraction 0.001` gave NaN for every `out` accuracy and exit 0; `algorithms --hparams
--dataset Nope` and `analyze latent --n-mix -5` exited 0.
"""

import json

import pytest

from dgalign.cli import main

HP = json.dumps({"backbone": "mlp", "mlp_width": 32, "batch_size": 16})


def train(out_dir, *extra):
    return [
        "train",
        "--dataset",
        "Spurious28",
        "--algorithm",
        "ERM",
        "--test-envs",
        "2",
        "--output-dir",
        out_dir,
        "--hparams",
        HP,
        "--steps",
        "3",
        "--no-progress",
        *extra,
    ]


def one_line(capsys, code) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("dgalign: error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_output_dir_writes_nothing_into_the_current_directory(
    tmp_path, capsys, monkeypatch, empty
):
    monkeypatch.chdir(tmp_path)
    err = one_line(capsys, main(train(empty)))
    assert "--output-dir" in err and "must be a non-empty path" in err
    assert list(tmp_path.iterdir()) == []


def test_empty_output_dir_is_refused_by_sweeps_and_reproduce(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = [
        "sweep",
        "launch",
        "--output-dir",
        "",
        "--datasets",
        "Spurious28",
        "--algorithms",
        "ERM",
    ]
    assert "must be a non-empty path" in one_line(capsys, main([*sweep, "--yes"]))
    reproduce = ["reproduce", "cmnist", "--output-dir", "", "--quick"]
    assert "must be a non-empty path" in one_line(capsys, main(reproduce))
    assert list(tmp_path.iterdir()) == []


def test_holdout_fraction_that_empties_a_split_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    err = one_line(capsys, main(train(str(out), "--holdout-fraction", "0.001")))
    assert "--holdout-fraction 0.001 leaves environment 0 (0, 64 examples) with an empty out" in err
    assert "use a fraction of at least 0.0156" in err
    assert not (out / "done").exists() and not (out / "results.jsonl").exists()


def test_a_small_valid_holdout_fraction_gives_finite_accuracies(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train(str(out), "--holdout-fraction", "0.02")) == 0
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert all(0.0 <= record[f"env{i}_out_acc"] <= 1.0 for i in range(3))


def test_algorithms_table_of_an_unknown_dataset_is_refused(capsys):
    err = one_line(capsys, main(["algorithms", "--hparams", "--dataset", "Nope"]))
    assert "unknown dataset 'Nope'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "latent", "run", "--n-mix", "-5"],
        ["analyze", "latent", "run", "--per-env", "1"],
        ["analyze", "flatness", "run", "--radii", "0", "nan"],
        ["analyze", "surface", "a", "b", "c", "--grid", "1"],
        ["sweep", "status", "--output-dir", "x", "--tail", "-1"],
        ["reproduce", "cmnist", "--fgsm-eps", "0.1", "inf"],
        ["reproduce", "cmnist", "--majority", "0.2"],
        [
            "train",
            "--dataset",
            "Spurious28",
            "--algorithm",
            "ERM",
            "--output-dir",
            "x",
            "--steps",
            "0",
        ],
    ],
)
def test_numeric_flags_have_ranges(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    err = one_line(capsys, main(argv))
    assert "must be" in err and "see `dgalign" in err
    assert list(tmp_path.iterdir()) == []
