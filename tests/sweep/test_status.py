"""A sweep's failed attempts recorded in err.txt, its run directories found, and deleting
unfinished ones (never a running one)."""

import json

from dgalign.runs.launch import record_attempt
from dgalign.runs.lock import run_lock
from dgalign.runs.state import JobState, err_tail, run_state
from dgalign.sweep.execute import finish
from dgalign.sweep.status import deletable, delete_run_dirs, scan_jobs


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
