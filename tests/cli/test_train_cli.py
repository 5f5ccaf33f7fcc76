"""`dgalign train` as a user runs it: one-line errors, SIGKILL and resume, finished runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgalign.cli import main

HP = '{"backbone": "mlp", "mlp_width": 32, "batch_size": 16}'


def _cmd(out_dir, *extra):
    return [
        "train",
        "--dataset",
        "Spurious28",
        "--algorithm",
        "ERM",
        "--test-envs",
        "2",
        "--output-dir",
        str(out_dir),
        "--hparams",
        HP,
        "--no-progress",
        *extra,
    ]


def _records(path):
    lines = (Path(path) / "results.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        r = json.loads(line)
        r.pop("step_time")
        r.pop("mem_gb")
        r["args"].pop("output_dir")
        out.append(r)
    return out


def test_domainbed_underscore_spellings_are_accepted(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "Spurious28",
            "--algorithm",
            "ERM",
            "--test_envs",
            "2",
            "--output_dir",
            str(tmp_path / "r"),
            "--hparams",
            HP,
            "--steps",
            "3",
            "--checkpoint_freq",
            "2",
            "--hparams_seed",
            "0",
            "--trial_seed",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    records = _records(tmp_path / "r")
    assert records[-1]["args"]["trial_seed"] == 1 and records[-1]["step"] == 2


@pytest.mark.parametrize(
    ("argv_changes", "message"),
    [
        (["--dataset", "Nope"], "unknown dataset 'Nope'; valid names: Debug28, Spurious28"),
        (["--algorithm", "Nope"], "unknown algorithm 'Nope'; valid names: ERM"),
        (["--test-envs", "7"], "test env 7 is out of range"),
        (["--hparams", "{lr: 1}"], "--hparams is not valid JSON"),
        (["--hparams", '{"lr_d": 1}'], "unknown hyper-parameter(s) lr_d"),
    ],
)
def test_bad_input_is_one_line_on_stderr(tmp_path, capsys, argv_changes, message):
    argv = _cmd(tmp_path / "r", "--steps", "3")
    for i in range(0, len(argv_changes), 2):
        flag = argv_changes[i]
        argv[argv.index(flag) + 1] = argv_changes[i + 1]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err
    assert err.startswith("dgalign: error:") and "\n" not in err
    assert "Traceback" not in err


def test_finished_run_message_and_exit_zero(tmp_path, capsys):
    assert main(_cmd(tmp_path / "r", "--steps", "3")) == 0
    assert main(_cmd(tmp_path / "r", "--steps", "3")) == 0
    assert "finished run" in capsys.readouterr().err


def test_algorithms_lists_erm(capsys):
    assert main(["algorithms"]) == 0
    assert "ERM" in capsys.readouterr().out
    assert main(["algorithms", "--hparams", "--dataset", "Spurious28"]) == 0
    table = capsys.readouterr().out
    assert "| (all) | lr | 0.001 | 10^U(-4.5, -2.5) |" in table


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path):
    """Kill the process with SIGKILL part-way, rerun the same command: the records equal
    those of a run that was never interrupted."""
    steps = ["--steps", "400", "--checkpoint-freq", "20"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    assert main(_cmd(full_dir, *steps)) == 0

    command = [sys.executable, "-m", "dgalign", *_cmd(killed_dir, *steps)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = killed_dir / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and len(results.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "done").exists(), "the run finished before it could be killed"
    n_before = len(results.read_text().splitlines())
    assert 4 <= n_before < 21

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (killed_dir / "done").exists()
    assert _records(killed_dir) == _records(full_dir)


def test_corrupt_data_file_is_one_line_error(tmp_path, capsys, monkeypatch):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(b"\x00\x00\x08\x03 not really idx")
    monkeypatch.setenv("DGALIGN_MNIST_SOURCES", "local")
    argv = [
        "train",
        "--dataset",
        "ColoredMNIST",
        "--algorithm",
        "ERM",
        "--test-envs",
        "2",
        "--output-dir",
        str(tmp_path / "r"),
        "--data-dir",
        str(tmp_path / "data"),
        "--steps",
        "2",
        "--no-progress",
    ]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith("dgalign: error:") and "MNIST" in err[-1]
    assert "Traceback" not in "\n".join(err)


def _losses(path):
    return [r["loss"] for r in _records(path)]


def test_bf16_training_follows_fp32_and_resume_keeps_the_precision(tmp_path, capsys):
    """bf16 autocast on the CPU: the recorded losses stay within bf16's resolution of the fp32
    run's (8 mantissa bits: relative 2^-8 per op; a few % after 6 steps of a small MLP), and a
    run directory refuses to resume under another precision."""
    extra = ("--steps", "6", "--checkpoint-freq", "3")
    assert main(_cmd(tmp_path / "fp32", *extra)) == 0
    assert main(_cmd(tmp_path / "bf16", *extra, "--precision", "bf16")) == 0
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert len(fp32) == len(bf16) == 3  # steps 0, 3 and the last
    assert bf16 == pytest.approx(fp32, rel=0.05)
    assert bf16 != fp32  # the switch reached the step
    assert _records(tmp_path / "bf16")[-1]["args"]["precision"] == "bf16"
    capsys.readouterr()
    assert main(_cmd(tmp_path / "bf16", "--steps", "9", "--checkpoint-freq", "3")) != 0
    err = capsys.readouterr().err
    assert "precision" in err and "\n" not in err.strip()
