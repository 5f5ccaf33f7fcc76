"""`dgalign sweep` without training: previews, confirmation, dummy launcher, status output,
one-line errors."""

import builtins
import io
import sys

import pytest

from dgalign.cli import main
from dgalign.runs.launch import record_attempt
from dgalign.sweep.launchers import LauncherOptions, make_launcher
from dgalign.sweep.local import LocalLauncher


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_dummy_launcher_prints_commands_and_runs_nothing(kit, tmp_path, capsys):
    spec = kit.fast_spec(tmp_path, single_test_envs=False, n_hparams=2)
    code, out, _ = run(["sweep", "launch", *kit.spec_argv(spec), "--launcher", "dummy"], capsys)
    assert code == 0
    assert "= 12 job(s): 0 done, 0 running, 0 failed, 0 incomplete, 12 not launched" in out
    commands = [line for line in out.splitlines() if line.startswith("Dummy launcher: ")]
    assert len(commands) == 12 and "python -m dgalign train --algorithm ERM" in commands[0]
    assert not (tmp_path / "sweep").exists()


def test_dummy_launcher_passes_the_precision_switches(kit, tmp_path, capsys):
    argv = ["sweep", "launch", *kit.spec_argv(kit.fast_spec(tmp_path)), "--launcher", "dummy"]
    code, out, _ = run([*argv, "--precision", "bf16", "--deterministic"], capsys)
    commands = [line for line in out.splitlines() if line.startswith("Dummy launcher: ")]
    assert code == 0 and len(commands) == 3
    assert all("--precision bf16" in c and "--deterministic" in c for c in commands)
    code, out, _ = run(argv, capsys)
    assert code == 0 and "--precision" not in out and "--deterministic" not in out


def test_launch_needs_confirmation(kit, tmp_path, capsys, monkeypatch):
    argv = ["sweep", "launch", *kit.spec_argv(kit.fast_spec(tmp_path))]
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal
    code, out, err = run(argv, capsys)
    assert code == 2 and "About to launch 3 job(s) with the local launcher" in out
    assert err == (
        "dgalign: error: refusing to launch 3 job(s) without confirmation: stdin is not a "
        "terminal; pass --yes\n"
    )
    monkeypatch.setattr(sys, "stdin", FakeTTY())
    questions = []
    monkeypatch.setattr(builtins, "input", lambda q: questions.append(q) or "n")
    code, out, _ = run(argv, capsys)
    assert code == 1 and questions == ["Launch 3 job(s)? [y/N] "] and "Nothing launched." in out
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--launcher", "lsf"],
            "unknown launcher 'lsf'; valid launchers: local, ray, slurm, dummy",
        ),
        (["--partition", "gpu"], "--partition only applies to --launcher slurm"),
        (["--launcher", "slurm", "--workers", "2"], "--workers only applies to --launcher local"),
        (["--ray-address", "auto"], "--ray-address only applies to --launcher ray"),
        (["--workers", "0"], "argument --workers: must be an integer >= 1, got 0"),
        (
            ["--launcher", "ray", "--ray-address", "auto", "--workers", "2"],
            "--workers sizes a local Ray instance",
        ),
        (
            ["--max-retries", "-1"],
            "argument --max-retries/--max_retries: must be an integer >= 0, got -1",
        ),
        (["--start-method", "spawn"], "unknown start method 'spawn'; valid: forked, fresh"),
        (
            ["--threads-per-job", "0"],
            "argument --threads-per-job/--threads_per_job: must be an integer >= 1, got 0",
        ),
        (
            ["--loader-workers-per-job", "-1"],
            "argument --loader-workers-per-job/--loader_workers_per_job: must be an integer >= 0",
        ),
        (
            ["--launcher", "slurm", "--threads-per-job", "2"],
            "--threads-per-job only applies to --launcher local",
        ),
        (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
        (["--launcher", "slurm", "--time", "soon"], "--time 'soon' is not a Slurm time"),
        (["--launcher", "slurm", "--submitit-cluster", "aws"], "unknown --submitit-cluster 'aws'"),
        (["--launcher", "slurm", "--yes"], "sbatch not found"),
        (["--datasets", "Nope"], "unknown dataset 'Nope'"),
    ],
)
def test_bad_launch_options_are_one_line_errors(kit, tmp_path, capsys, extra, message):
    code, _, err = run(["sweep", "launch", *kit.spec_argv(kit.fast_spec(tmp_path)), *extra], capsys)
    assert code == 2 and err.startswith("dgalign: error: ") and message in err
    assert err.count("\n") == 1


def test_missing_ray_and_submitit_say_how_to_install(kit, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    base = ["sweep", "launch", *kit.spec_argv(kit.fast_spec(tmp_path)), "--yes"]
    _, _, err = run([*base, "--launcher", "ray"], capsys)
    assert err.startswith("dgalign: error: --launcher ray needs Ray: pip install dgalign[ray]")
    assert err.endswith("(or pip install ray)\n") and err.count("\n") == 1
    _, _, err = run([*base, "--launcher", "slurm", "--submitit-cluster", "local"], capsys)
    assert "pip install dgalign[slurm]" in err and err.count("\n") == 1


def test_status_and_delete_incomplete(kit, tmp_path, capsys, monkeypatch):
    spec = kit.fast_spec(tmp_path)
    jobs = spec.jobs()
    sweep = spec.output_dir
    code, _, err = run(["sweep", "status", "--output-dir", sweep], capsys)
    assert code == 2 and err == f"dgalign: error: sweep directory {sweep} does not exist\n"
    failed = jobs[0].output_dir
    failed.mkdir(parents=True)
    (failed / "err.txt").write_text(
        "step 4 ...\nTraceback (most recent call last):\nOSError: disk\n"
    )
    record_attempt(failed, "failed", "local", "exit code 1")
    (jobs[1].output_dir).mkdir()
    (jobs[1].output_dir / "done").write_text("done\n")
    code, out, _ = run(["sweep", "status", *kit.spec_argv(spec), "--tail", "2"], capsys)
    assert code == 0
    assert (
        f"Sweep {sweep}: 3 job(s): 1 done, 0 running, 1 failed, 0 incomplete, 1 not launched" in out
    )
    assert "Failed (relaunch to retry" in out
    assert "    | Traceback (most recent call last):\n    | OSError: disk\n" in out
    # without the grid options: every run directory, no "not launched"
    code, out, _ = run(["sweep", "status", "--output-dir", sweep], capsys)
    assert f"Sweep {sweep}: 2 job(s): 1 done, 0 running, 1 failed, 0 incomplete\n" in out
    code, _, err = run(
        ["sweep", "status", "--output-dir", sweep, "--datasets", "Spurious28"], capsys
    )
    assert code == 2 and "give both --datasets and --algorithms" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run(["sweep", "delete-incomplete", *kit.spec_argv(spec)], capsys)
    assert code == 2 and "refusing to delete 1 run director(y/ies) without confirmation" in err
    code, out, _ = run(["sweep", "delete_incomplete", *kit.spec_argv(spec), "--yes"], capsys)
    assert code == 0 and "Deleted 1 run director(y/ies)." in out
    assert not failed.exists() and jobs[1].output_dir.exists()


def test_local_launcher_is_gpu_aware(monkeypatch):
    launcher = LocalLauncher(gpus=["3", "5"], jobs_per_gpu=2)
    assert launcher.workers == 4
    assert [launcher.slot_env(s)["CUDA_VISIBLE_DEVICES"] for s in range(4)] == ["3", "5", "3", "5"]
    assert launcher.start_method == "fresh"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = LocalLauncher(gpus=[])
    assert cpu.workers == 1 and cpu.start_method == "forked"
    assert cpu.threads() >= 1 and cpu.slot_env(0)["OMP_NUM_THREADS"] == str(cpu.threads())
    assert make_launcher("local", LauncherOptions(workers=2)).workers == 2
