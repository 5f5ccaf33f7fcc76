"""Every bad input the fault-injection pass found printing a traceback now gives one line
(`dgalign: error: ...`) through the real CLI, and nothing written before is lost."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from dgalign.algorithms.erm import ERM
from dgalign.cli import main
from dgalign.utils import io as io_utils
from dgalign.utils.io import atomic_torch_save

HP = {"backbone": "mlp", "mlp_width": 32, "batch_size": 16}


def train(out_dir, *extra, hparams=None):
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
        json.dumps({**HP, **(hparams or {})}),
        "--steps",
        "7",
        "--checkpoint-freq",
        "2",
        "--no-progress",
        *extra,
    ]


def one_line(capsys, code, expect_code=2) -> str:
    err = capsys.readouterr().err.strip()
    assert code == expect_code, err
    assert err.startswith("dgalign: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def files(path):
    logs = {"out.txt", "err.txt"}
    return {p.name: p.read_bytes() for p in path.iterdir() if p.name not in logs}


@pytest.fixture
def interrupted(tmp_path, monkeypatch, capsys):
    """A run directory stopped (Ctrl-C) after its checkpoint at step 4: records 0, 2, 4."""
    out = tmp_path / "run"
    calls = {"n": 0}
    original = ERM.update

    def update(self, minibatches):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(self, minibatches)

    monkeypatch.setattr(ERM, "update", update)
    assert main(train(out)) == 130
    monkeypatch.setattr(ERM, "update", original)
    capsys.readouterr()
    return out


def _edit_checkpoint(out, edit):
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    atomic_torch_save(out / "checkpoint.pt", edit(state), digest=True)


def _drop_a_key(state):
    model = dict(state["model"])
    model.pop(next(iter(model)))
    return {**state, "model": model}


def _wrong_shape(state):
    model = dict(state["model"])
    model[next(iter(model))] = torch.zeros(2, 5)
    return {**state, "model": model}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda out: _edit_checkpoint(out, _drop_a_key), "does not fit this run (RuntimeError"),
        (lambda out: _edit_checkpoint(out, _wrong_shape), "does not fit this run (RuntimeError"),
        (
            lambda out: (out / "results.jsonl").write_text("42\n"),
            "results.jsonl line 1 is not a record",
        ),
        (
            lambda out: (out / "results.jsonl").write_text('{"loss": 1.0}\n'),
            "results.jsonl line 1 is not a record",
        ),
        (lambda out: (out / "run.json").write_text("[]"), "run.json is unreadable or not a JSON"),
    ],
    ids=["missing-keys", "wrong-shapes", "record-42", "record-without-step", "run-json-list"],
)
def test_damaged_run_files_are_one_line(interrupted, capsys, damage, message):
    damage(interrupted)
    before = files(interrupted)
    err = one_line(capsys, main(train(interrupted)))
    assert message in err and "--restart-from-scratch" in err
    assert files(interrupted) == before


@pytest.mark.parametrize("content", ["{}", "123", '{"pid": "abc"}'])
def test_odd_lock_file_contents_do_not_matter(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "lock").write_text(content)
    assert main(train(out)) == 0
    assert (out / "done").exists() and not (out / "lock").exists()


def test_read_only_output_directory_is_one_line(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(io_utils.tempfile, "mkstemp", refuse)
    err = one_line(capsys, main(train(tmp_path / "run")))
    assert "cannot write" in err and "run.json: Permission denied; fix the permissions" in err


def test_disk_full_while_checkpointing_is_one_line_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_fsync = os.fsync
    seen = {"n": 0}

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".checkpoint.pt.") and not name.startswith(".checkpoint.pt.sha256"):
            seen["n"] += 1
            if seen["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(io_utils.os, "fsync", fsync)
    err = one_line(capsys, main(train(out)))
    assert "checkpoint.pt: No space left on device; free some space" in err
    records = [
        json.loads(line)["step"] for line in (out / "results.jsonl").read_text().splitlines()
    ]
    assert records == [0, 2] and (out / "checkpoint.pt").exists()
    monkeypatch.setattr(io_utils.os, "fsync", real_fsync)
    assert main(train(out)) == 0
    assert "resuming" in (out / "out.txt").read_text()


def _small_files_only():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


def test_file_size_limit_is_one_line_in_a_real_process(tmp_path):
    """A real OS refusal (ulimit -f): the first checkpoint (~1 MB) cannot be written."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dgalign", *train(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_small_files_only,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("dgalign: error:") and "\n" not in err
    assert "checkpoint.pt: File too large" in err
    assert json.loads((out / "results.jsonl").read_text())["step"] == 0


def test_model_file_without_args_is_one_line_for_analyze(tmp_path, capsys):
    model = tmp_path / "model.pt"
    torch.save({"model_dict": {}, "model_hparams": {}}, model)
    err = one_line(capsys, main(["analyze", "flatness", str(model)]))
    assert "is not a usable dgalign model or checkpoint: it lacks 'args'" in err


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ('{"batch_size": Infinity}', "batch_size must be a finite number, got inf"),
        ('{"batch_size": NaN}', "batch_size must be a finite number, got nan"),
        ('{"batch_size": 0}', "batch_size must be an integer >= 1, got 0"),
        ('{"batch_size": -4}', "batch_size must be an integer >= 1, got -4"),
        ('{"lr": -0.1}', "lr must be a number >= 0, got -0.1"),
        ('{"mlp_width": 0}', "mlp_width must be an integer >= 1, got 0"),
        ('{"mlp_dropout": 2.0}', "mlp_dropout must be a number in [0, 1), got 2.0"),
    ],
)
def test_out_of_domain_hparams_are_one_line(tmp_path, capsys, hparams, message):
    argv = train(tmp_path / "run")
    argv[argv.index("--hparams") + 1] = hparams
    assert message in one_line(capsys, main(argv))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295], got -1"),
        (["--seed", str(2**64 + 5)], "argument --seed: must be an integer in [0, 4294967295]"),
        (["--output-dir", "/proc/self/nope/x"], "cannot create the run directory /proc/self"),
    ],
)
def test_bad_train_flags_are_one_line(tmp_path, capsys, argv, message):
    assert message in one_line(capsys, main(train(tmp_path / "run", *argv)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["reproduce", "cmnist", "--batch-restarts", "-1"],
            "argument --batch-restarts: must be an integer >= 0, got -1",
        ),
        (
            ["analyze", "flatness", "run", "--max-samples", "0"],
            "argument --max-samples: must be an integer >= 1, got 0",
        ),
        (
            ["bench", "curvature", "--device", "bogus"],
            "--device 'bogus' is not a torch device; use auto, cpu, cuda or cuda:N",
        ),
    ],
)
def test_bad_flags_of_other_commands_are_one_line(capsys, argv, message):
    assert message in one_line(capsys, main(argv))


def test_sweep_with_a_bad_hparam_fails_before_any_job_starts(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    argv = ["sweep", "launch", "--output-dir", str(sweep), "--datasets", "Spurious28"]
    argv += ["--algorithms", "ERM", "IRM", "--n-hparams", "3", "--n-trials", "1", "--yes"]
    argv += ["--hparams", '{"batch_size": 0}']
    err = one_line(capsys, main(argv))
    assert "hyper-parameter batch_size must be an integer >= 1, got 0" in err
    assert not sweep.exists()
