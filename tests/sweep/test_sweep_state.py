"""Job states read from run directories, and deleting unfinished ones (never a running one)."""

import json
import os
import socket
import subprocess
import sys

from dgalign.sweep.execute import finish
from dgalign.sweep.state import (
    CLAIM_FILE,
    JobState,
    claim_launch,
    err_tail,
    live_claim,
    record_attempt,
    release_launch,
    run_state,
)
from dgalign.sweep.status import deletable, delete_run_dirs, scan_jobs
from dgalign.train.lock import run_lock

HOLDER = """
import sys
from pathlib import Path
from dgalign.train.lock import try_lock
held = try_lock(Path(sys.argv[1]))
print("held" if held else "busy", flush=True)
sys.stdin.read()
"""


def start_holder(path, expect="held"):
    """A process that tries to take the lock on `path` and holds it (if it got it) until its
    stdin closes; returned once it has said whether it got it (`expect`)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == expect
    return proc


def stale_lock(path, name="lock"):
    """The file a SIGKILLed owner leaves: its record, but no lock held on it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps({"host": socket.gethostname(), "pid": 1}))


def test_states(tmp_path):
    run = tmp_path / "run"
    assert run_state(run) is JobState.NOT_LAUNCHED
    run.mkdir()
    assert run_state(run) is JobState.NOT_LAUNCHED  # an empty directory: nothing ran
    (run / "run.json").write_text("{}")
    assert run_state(run) is JobState.INCOMPLETE
    with run_lock(run):
        assert run_state(run) is JobState.RUNNING
    stale_lock(run)  # a SIGKILLed run leaves its lock file behind: the kernel dropped the lock
    assert run_state(run) is JobState.INCOMPLETE
    for content in ("{}", "123", '{"pid": "abc"}', ""):  # whatever the file says
        (run / "lock").write_text(content)
        assert run_state(run) is JobState.INCOMPLETE
    (run / "lock").unlink()
    (run / "err.txt").write_text("Traceback (most recent call last):\nValueError: x\n")
    assert run_state(run) is JobState.FAILED  # DomainBed's runs: an error in err.txt
    record_attempt(run, "interrupted", "local")
    assert run_state(run) is JobState.INCOMPLETE  # the last recorded attempt wins
    record_attempt(run, "failed", "local", "exit code 1")
    assert run_state(run) is JobState.FAILED
    assert json.loads((run / "job.json").read_text())["attempts"] == 2
    (run / "done").write_text("done\n")
    assert run_state(run) is JobState.DONE


def test_finish_records_failures_in_err_txt(kit, tmp_path):
    job = kit.fast_spec(tmp_path).jobs()[0]
    job.output_dir.mkdir(parents=True)
    (job.output_dir / "err.txt").write_text("error: lr diverged\n")
    captured = "dgalign: error: lr diverged\nTraceback (most recent call last):\nKeyError: 1\n"
    outcome = finish(job, "local", -9, captured)
    assert (outcome.status, outcome.detail, outcome.attempts) == (
        "failed",
        "killed by signal SIGKILL",
        1,
    )
    assert err_tail(job.output_dir, 10) == [
        "error: lr diverged",  # already there: not repeated with the "dgalign: " prefix
        "Traceback (most recent call last):",
        "KeyError: 1",
        "[dgalign sweep] attempt 1 failed: killed by signal SIGKILL",
    ]
    busy = finish(job, "local", 2, "dgalign: error: x is being run by pid 3 on h; wait")
    assert busy.status == "busy" and run_state(job.output_dir) is JobState.FAILED


def test_delete_incomplete_spares_running_and_done(kit, tmp_path):
    jobs = kit.fast_spec(tmp_path).jobs()  # 3 jobs
    failed, running, done = (job.output_dir for job in jobs)
    failed.mkdir(parents=True)
    record_attempt(failed, "failed", "local", "exit code 1")
    running.mkdir()
    done.mkdir()
    (done / "done").write_text("done\n")
    with run_lock(running):
        victims = deletable(jobs)
        assert [(j.output_dir, s) for j, s in victims] == [(failed, JobState.FAILED)]
        assert delete_run_dirs([j for j, _ in victims]) == 1
    assert not failed.exists() and running.exists() and done.exists()
    # a run that started in the meantime is kept
    failed.mkdir()
    messages = []
    with run_lock(failed):
        assert delete_run_dirs([jobs[0]], messages.append) == 0
    assert failed.exists() and "a process started running it" in messages[0]


def test_scan_finds_run_dirs(kit, tmp_path):
    jobs = kit.fast_spec(tmp_path).jobs()
    jobs[0].output_dir.mkdir(parents=True)
    (jobs[0].output_dir / "run.json").write_text(json.dumps(jobs[0].train_args))
    (tmp_path / "sweep" / ".submitit").mkdir()
    (tmp_path / "sweep" / "stray").mkdir()
    (tmp_path / "sweep" / "stray" / "err.txt").write_text("x")
    (tmp_path / "sweep" / "plots").mkdir()
    (tmp_path / "sweep" / "plots" / "curves.png").write_bytes(b"png")
    found = scan_jobs(tmp_path / "sweep")
    assert [j.describe() for j in found] == [
        jobs[0].describe(),
        "? ? test_envs=? hparams_seed=? trial_seed=?",
    ]


def test_launch_claims(tmp_path):
    run = tmp_path / "run"
    assert claim_launch(run, "local")  # creates the directory
    assert live_claim(run)["pid"] == os.getpid() and run_state(run) is JobState.RUNNING
    holder = start_holder(run / CLAIM_FILE, expect="busy")  # another process cannot claim it
    holder.stdin.close()
    holder.wait()
    release_launch(run)
    assert not (run / CLAIM_FILE).exists() and run_state(run) is JobState.NOT_LAUNCHED
    stale_lock(run, CLAIM_FILE)  # left by a SIGKILLed launcher: nothing holds it
    assert live_claim(run) is None and claim_launch(run, "local")
    release_launch(run)
