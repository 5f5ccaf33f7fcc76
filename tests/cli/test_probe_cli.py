"""`dgalign probe extract | train | report` end to end on fake layouts with the tiny random
backbone, and the CLI's one-line errors."""

from __future__ import annotations

import pytest
import torch

from dgalign.cli import main
from dgalign.probe.fake import WRITERS
from dgalign.probe.features import load_features


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("dataset", ["waterbirds", "celeba", "multinli"])
def test_extract_train_report_end_to_end(dataset, tmp_path, capsys):
    WRITERS[dataset](tmp_path / "data")
    feats, runs = tmp_path / "features", tmp_path / "runs"
    argv = [
        "-q",
        "probe",
        "extract",
        "--dataset",
        dataset,
        "--backbone",
        "tiny-random",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(feats),
        "--batch-size",
        "8",
    ]
    assert main(argv) == 0
    fs = load_features(feats)
    assert fs.meta["dataset"]["name"] == dataset and fs.features.shape[1] == 16
    for algorithm in ("ERM", "CMA-gram"):
        code = main(
            [
                "-q",
                "probe",
                "train",
                "--features",
                str(feats),
                "--algorithm",
                algorithm,
                "--epochs",
                "2",
                "--seeds",
                "0,1",
                "--batch-size",
                "16",
                "--pca",
                "8",
                "--isr-mean",
                "--out",
                str(runs),
                "--hparams",
                "{}",
            ]
        )
        assert code == 0
    out = capsys.readouterr().out
    assert "| CMA-gram | 2 |" in out
    assert main(["probe", "report", str(runs), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("method,seeds,test_worst_mean") and len(lines) == 3


def test_errors_are_one_line(tmp_path, capsys):
    code = main(
        [
            "probe",
            "train",
            "--features",
            str(tmp_path),
            "--algorithm",
            "ERM",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("dgalign: error:") and "\n" not in err
    code = main(
        [
            "probe",
            "extract",
            "--dataset",
            "waterbirds",
            "--backbone",
            "tiny-random",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "f"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "metadata.csv not found" in err
    code = main(
        [
            "probe",
            "train",
            "--features",
            str(tmp_path),
            "--algorithm",
            "ERM",
            "--out",
            str(tmp_path),
            "--hparams",
            "[1]",
        ]
    )
    assert code == 2 and "JSON object" in capsys.readouterr().err
