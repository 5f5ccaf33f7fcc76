"""The Ray launcher on a local Ray instance: failures recorded and retried, others keep running."""

import pytest

from dgalign.runs.state import JobState, run_state
from dgalign.sweep.jobs import Job
from dgalign.sweep.ray_launcher import RayLauncher


def test_a_crash_in_a_job_is_recorded_with_its_traceback(kit, tmp_path, monkeypatch):
    """`run_in_process` (the body of a Ray task and a Slurm job) on an unexpected exception."""
    import dgalign.train
    from dgalign.sweep.execute import run_in_process

    def crash(config, **options):
        return 1 / 0

    monkeypatch.setattr(dgalign.train, "run_training", crash)
    job = kit.fast_spec(tmp_path).jobs()[0]
    outcome = run_in_process(job, "ray")
    assert (outcome.status, outcome.detail) == ("failed", "ZeroDivisionError: division by zero")
    err = (job.output_dir / "err.txt").read_text()
    assert "Traceback (most recent call last)" in err and "1 / 0" in err


@pytest.mark.slow  # real processes; a few seconds each
def test_failed_task_is_recorded_and_retried_while_others_run(kit, tmp_path, ray_local):
    jobs = kit.fast_spec(tmp_path).jobs()
    # A job made by hand (a sweep refuses such --hparams before starting any job).
    crash_args = {**jobs[0].train_args, "hparams": '{"backbone": "mlp", "batch_size": 0}'}
    bad = Job(crash_args, jobs[0].output_dir.parent / "crashes")
    lines: list[str] = []
    summary = RayLauncher(max_retries=2, out=lines.append).run([bad, *jobs])
    assert sorted(j.name for j in summary.completed) == sorted(j.name for j in jobs)
    assert summary.retried == 2 and [j.name for j, _ in summary.failed] == ["crashes"]
    assert summary.failed[0][1] == "hyper-parameter batch_size must be an integer >= 1, got 0"
    assert kit.read_json(bad.output_dir / "job.json")["attempts"] == 3
    err = (bad.output_dir / "err.txt").read_text()
    assert "Traceback" not in err and err.count("[dgalign sweep] attempt") == 3
    assert run_state(bad.output_dir) is JobState.FAILED
    assert sum(line.startswith("[retry") for line in lines) == 2
    # a second launch finds the finished jobs done and reruns only the failed one
    again = RayLauncher(out=lines.append).run([bad, *jobs])
    assert again.skipped_done == 3 and len(again.failed) == 1
    assert all(kit.out_lines(j.output_dir, "step 0:") == 1 for j in jobs)
