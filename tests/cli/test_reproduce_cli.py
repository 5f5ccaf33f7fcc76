"""`dgalign reproduce`: bad input is one line on stderr, before any data is loaded."""

from __future__ import annotations

import pytest
import torch

from dgalign.cli import main


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--restarts", "0"], "argument --restarts: must be an integer >= 1, got 0"),
        (["--methods", "Foo"], "unknown method 'Foo'; valid: ERM, IRM"),
        (["--device", "tpu"], "--device 'tpu' is not a torch device"),
        (
            ["--majority", "1.5", "--label-shift"],
            "argument --majority: must be a number in [0.5, 1], got 1.5",
        ),
        (["--dynamics-every", "0"], "argument --dynamics-every: must be an integer >= 1"),
        (["--variant", "rotated"], "argument --variant: invalid choice: 'rotated'"),
        (["--select", "test-acc"], "argument --select: invalid choice: 'test-acc'"),
        (["--hidden", "0"], "argument --hidden: must be an integer >= 1, got 0"),
    ],
)
def test_bad_reproduce_input_is_one_line(tmp_path, capsys, monkeypatch, extra, message):
    def no_data(_):
        raise AssertionError("data must not be loaded for bad input")

    monkeypatch.setattr("dgalign.experiments.cmnist_data.load_mnist_train", no_data)
    argv = ["reproduce", "cmnist", "--quick", "--output-dir", str(tmp_path / "r"), *extra]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("dgalign: error:") and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_gpu_is_one_line(tmp_path, capsys):
    assert main(["reproduce", "cmnist", "--device", "cuda:0", "--output-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "no CUDA GPU is available; use auto" in err and "\n" not in err


@pytest.mark.parametrize("target", ["cmnist-fig4", "cmnist-table"])
def test_finished_run_commands_refuse_other_dirs(tmp_path, capsys, target):
    assert main(["reproduce", target, str(tmp_path), str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "is not a `dgalign reproduce cmnist` run dir (no config.json)" in err
    assert "\n" not in err


def test_variant_select_and_reduced_protocol_reach_the_config(tmp_path):
    from dgalign.cli import build_parser
    from dgalign.cli.reproduce_cmd import config_from_args

    argv = ["reproduce", "cmnist", "--variant", "close-colors", "--select", "env-gap"]
    args = build_parser().parse_args(
        [*argv, "--hidden", "32", "--pool", "8000", "--steps", "201", "--anneal-iters", "75"]
    )
    config = config_from_args(args)
    assert config.data.color_flip == (0.15, 0.1, 0.9) and config.data.pool == 8000
    assert config.protocol.hidden == 32 and config.reduced and config.select == "env-gap"
    assert (config.protocol.steps, config.protocol.anneal_iters) == (201, 75)
    assert config.output_dir.endswith("-close-colors")
    assert config.report_methods[-1] == "HessianDiag-sel(env-gap)"
