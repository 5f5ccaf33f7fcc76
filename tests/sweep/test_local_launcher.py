"""The local launcher with real jobs: SIGKILL and resume, crashes and retries, concurrent
launches, Ctrl-C, the fresh-interpreter start method, and each slot's CPU budget."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from dgalign.errors import ConfigError
from dgalign.runs.state import JobState, err_tail, live_owner, run_state
from dgalign.sweep import local
from dgalign.sweep.execute import BUSY_MESSAGE
from dgalign.sweep.jobs import Job
from dgalign.sweep.local import LocalLauncher
from dgalign.sweep.status import print_status

pytestmark = pytest.mark.slow  # real processes; a few seconds each


def quiet(_line: str) -> None:
    pass


def test_sigkilled_job_is_failed_then_resumed_on_relaunch(kit, tmp_path):
    spec = kit.fast_spec(tmp_path, steps=100, checkpoint_freq=10)
    job = spec.jobs()[0]
    lines: list[str] = []
    summary = {}
    thread = threading.Thread(
        target=lambda: summary.update(s=LocalLauncher(out=lines.append).run([job]))
    )
    thread.start()
    kit.kill_mid_run([job], min_records=2)
    thread.join(120)
    assert [detail for _, detail in summary["s"].failed] == ["killed by signal SIGKILL"]
    assert run_state(job.output_dir) is JobState.FAILED
    assert err_tail(job.output_dir, 1) == [
        "[dgalign sweep] attempt 1 failed: killed by signal SIGKILL"
    ]
    status: list[str] = []
    print_status([job], spec.output_dir, out=status.append)
    assert status[0].endswith("1 failed, 0 incomplete, 0 not launched")
    assert "    | [dgalign sweep] attempt 1 failed: killed by signal SIGKILL" in status
    before = kit.n_records(job.output_dir)

    again = LocalLauncher(out=quiet).run([job])
    assert len(again.completed) == 1 and run_state(job.output_dir) is JobState.DONE
    out = (job.output_dir / "out.txt").read_text()
    assert "resuming" in out and kit.out_lines(job.output_dir, "step 0:") == 1
    steps = [
        r["step"]
        for r in map(
            __import__("json").loads, (job.output_dir / "results.jsonl").read_text().splitlines()
        )
    ]
    assert steps == [*range(0, 100, 10), 99] and before >= 2
    assert kit.read_json(job.output_dir / "job.json")["attempts"] == 2


def test_a_failing_job_never_stops_the_sweep_and_is_retried(kit, tmp_path):
    good = kit.fast_spec(tmp_path).jobs()[0]
    # A job made by hand (a sweep refuses such --hparams before starting any job).
    crash_args = {**good.train_args, "hparams": '{"backbone": "mlp", "batch_size": 0}'}
    bad = Job(crash_args, good.output_dir.parent / "crashes")
    summary = LocalLauncher(workers=2, max_retries=1, out=quiet).run([bad, good])
    assert summary.completed == [good] and summary.retried == 1
    assert [(j.name, d) for j, d in summary.failed] == [("crashes", "exit code 2")]
    assert kit.read_json(bad.output_dir / "job.json")["attempts"] == 2
    err = (bad.output_dir / "err.txt").read_text()
    assert "dgalign: error: hyper-parameter batch_size must be an integer >= 1, got 0" in err
    assert "Traceback" not in err
    assert err.rstrip().endswith("[dgalign sweep] attempt 2 failed: exit code 2")
    assert run_state(bad.output_dir) is JobState.FAILED


def test_fresh_interpreter_start_method(kit, tmp_path):
    job = kit.fast_spec(tmp_path).jobs()[0]
    summary = LocalLauncher(start_method="fresh", out=quiet).run([job])
    assert summary.completed == [job] and kit.out_lines(job.output_dir, "step 0:") == 1


def test_concurrent_launches_run_every_job_exactly_once(kit, tmp_path):
    spec = kit.fast_spec(tmp_path, n_hparams=2)  # 6 jobs
    command = [
        sys.executable,
        "-m",
        "dgalign",
        "sweep",
        "launch",
        *kit.spec_argv(spec),
        "--yes",
        "--workers",
        "2",
    ]
    launches = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs
    jobs = spec.jobs()
    for job in jobs:
        assert run_state(job.output_dir) is JobState.DONE
        assert kit.out_lines(job.output_dir, "step 0:") == 1, job.output_dir  # trained once
        assert "resuming" not in (job.output_dir / "out.txt").read_text()
        assert kit.read_json(job.output_dir / "job.json")["attempts"] == 1  # one launch ran it
        assert not (job.output_dir / "launch.lock").exists()
    completed = sum(
        line.split(": ")[1].startswith(("6", "5", "4", "3", "2", "1", "0"))
        for out in outputs
        for line in out.splitlines()
        if line.startswith("Launch finished")
    )
    assert completed == 2
    done_lines = [line for out in outputs for line in out.splitlines() if " done    " in line]
    assert len(done_lines) == len(jobs), outputs  # each job reported completed by one launch
    assert BUSY_MESSAGE not in "".join((j.output_dir / "err.txt").read_text() for j in jobs)


def test_ctrl_c_stops_jobs_and_leaves_the_sweep_relaunchable(kit, tmp_path):
    # Long enough that the job caught mid-run cannot finish before SIGINT reaches it.
    spec = kit.fast_spec(tmp_path, steps=400, checkpoint_freq=10)
    jobs = spec.jobs()
    launch = subprocess.Popen(
        [sys.executable, "-m", "dgalign", "sweep", "launch", *kit.spec_argv(spec), "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background commands (`pytest &`, `nohup`) with
        # SIGINT ignored, and Python then never raises KeyboardInterrupt: give the launch the
        # default disposition, as a terminal's Ctrl-C finds it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def running_job():
        for job in jobs:
            owner = live_owner(job.output_dir)
            if (
                owner
                and 2 <= kit.n_records(job.output_dir) <= 10
                and not (job.output_dir / "done").exists()
            ):
                return job, owner
        return None

    job, owner = kit.wait_until(running_job)
    launch.send_signal(signal.SIGINT)
    out, err = launch.communicate(timeout=300)  # a bound: seconds when idle, more under load
    assert launch.returncode == 130, (out, err)
    assert "Interrupted: stopping 1 running job(s)" in out
    assert "interrupted; rerun the same command to resume" in err
    try:
        os.kill(int(owner["pid"]), 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive and not (job.output_dir / "lock").exists()  # stopped cleanly
    assert run_state(job.output_dir) is JobState.INCOMPLETE
    assert kit.read_json(job.output_dir / "job.json")["status"] == "interrupted"
    summary = LocalLauncher(out=quiet).run([job])  # relaunching resumes it
    assert summary.completed == [job] and run_state(job.output_dir) is JobState.DONE
    assert "resuming" in (job.output_dir / "out.txt").read_text()


def test_launching_from_a_script_without_a_file(kit, tmp_path):
    """Forked jobs never re-import the caller's __main__ (a notebook, stdin, a script without a
    main guard)."""
    job = kit.fast_spec(tmp_path).jobs()[0]
    script = (
        "from dgalign.sweep import SweepSpec\n"
        "from dgalign.sweep.local import LocalLauncher\n"
        f"spec = SweepSpec(**{kit.fast_spec(tmp_path).__dict__!r})\n"
        "summary = LocalLauncher(start_method='forked').run(spec.jobs()[:1])\n"
        "print('completed', len(summary.completed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "completed 1" in done.stdout, done.stderr
    assert kit.out_lines(job.output_dir, "step 0:") == 1


#: A plugin every job loads: it records the CPU budget the job sees, one file per process.
PROBE = """
import json, os, pathlib, torch
keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DGALIGN_NUM_WORKERS")
seen = {key: os.environ.get(key) for key in keys} | {"torch": torch.get_num_threads()}
pathlib.Path(OUT, f"{os.getpid()}.json").write_text(json.dumps(seen))
"""


def _probed(jobs, tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    probe = tmp_path / "budget_probe.py"
    probe.write_text(f"OUT = {str(out)!r}\n{PROBE}")
    return [dataclasses.replace(job, plugins=(str(probe),)) for job in jobs], out


def _seen(out) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]


def test_forked_jobs_see_their_cpu_budget_and_precision(kit, tmp_path):
    """Two forked bf16, deterministic jobs of a 2-slot launch with 3 threads and 4 loader
    workers each: Spurious28 with one test env has 2 training loaders, 2 workers each."""
    spec = kit.fast_spec(tmp_path, precision="bf16", deterministic=True)
    jobs, out = _probed(spec.jobs()[:2], tmp_path)
    launcher = LocalLauncher(
        workers=2, threads_per_job=3, loader_workers_per_job=4, start_method="forked", out=quiet
    )
    summary = launcher.run(jobs)
    assert len(summary.completed) == 2 and not summary.failed
    expected = {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "DGALIGN_NUM_WORKERS": "2"}
    assert _seen(out) == [expected | {"torch": 3}] * 2
    for job in jobs:
        args = kit.read_records(job.output_dir)[-1]["args"]
        assert (args["precision"], args["deterministic"]) == ("bf16", True)


def test_fresh_jobs_see_their_cpu_budget(kit, tmp_path, monkeypatch):
    monkeypatch.setenv("DGALIGN_NUM_WORKERS", "1")  # a per-loader cap the launcher was given
    jobs, out = _probed(kit.fast_spec(tmp_path).jobs()[:1], tmp_path)
    launcher = LocalLauncher(threads_per_job=2, loader_workers_per_job=8, start_method="fresh")
    assert launcher.run(jobs).completed == jobs
    expected = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "DGALIGN_NUM_WORKERS": "1"}
    assert _seen(out) == [expected | {"torch": 2}]


def test_default_budget_is_a_share_of_the_cpus(kit, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DGALIGN_NUM_WORKERS", raising=False)
    monkeypatch.setattr(local, "usable_cpus", lambda: 64)
    job = kit.fast_spec(tmp_path).jobs()[0]  # 2 training loaders
    eight = LocalLauncher(gpus=[str(i) for i in range(8)], out=quiet)
    envs = [eight.slot_env(slot, job) for slot in range(8)]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == [str(i) for i in range(8)]
    assert {
        (e["OMP_NUM_THREADS"], e["MKL_NUM_THREADS"], e["DGALIGN_NUM_WORKERS"]) for e in envs
    } == {("8", "8", "4")}
    alone = LocalLauncher(gpus=[], out=quiet).slot_env(0, job)
    assert (alone["OMP_NUM_THREADS"], alone["DGALIGN_NUM_WORKERS"]) == ("64", "8")  # 8 at most
    assert (
        LocalLauncher(gpus=[], loader_workers_per_job=40).slot_env(0, job)["DGALIGN_NUM_WORKERS"]
        == "20"
    )  # an explicit budget is not capped at 8
    assert (
        LocalLauncher(gpus=[], loader_workers_per_job=0).slot_env(0, job)["DGALIGN_NUM_WORKERS"]
        == "0"
    )
    monkeypatch.setattr(local, "usable_cpus", lambda: 4)
    assert LocalLauncher(workers=8, gpus=[]).slot_env(0, job)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # set by the user: kept unless overridden
    assert LocalLauncher(gpus=[]).threads() == 5
    assert LocalLauncher(gpus=[], threads_per_job=2).threads() == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads_per_job": 0}, "--threads-per-job must be an integer >= 1, got 0"),
        ({"threads_per_job": -2}, "--threads-per-job must be an integer >= 1, got -2"),
        ({"loader_workers_per_job": -1}, "--loader-workers-per-job must be an integer >= 0"),
    ],
)
def test_bad_budgets_are_one_line_errors(options, message):
    with pytest.raises(ConfigError) as info:
        LocalLauncher(gpus=[], **options)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
