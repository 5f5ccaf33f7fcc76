"""The Slurm launcher through submitit's local executor (no cluster needed)."""

import pytest

from dgalign.cli import main
from dgalign.errors import ConfigError
from dgalign.runs.state import JobState, run_state
from dgalign.sweep.slurm import SweepTask, parse_time

submitit = pytest.importorskip("submitit")


@pytest.mark.slow
def test_two_job_array_with_the_local_executor(kit, tmp_path, capsys):
    spec = kit.fast_spec(tmp_path, n_hparams=2, single_test_envs=True, datasets=["Spurious28"])
    jobs = [j for j in spec.jobs() if j.train_args["test_envs"] == [0]]  # 2 jobs
    assert len(jobs) == 2
    argv = kit.spec_argv(spec)
    # a 2-job sweep: the other test envs already done
    for job in spec.jobs():
        if job not in jobs:
            job.output_dir.mkdir(parents=True)
            (job.output_dir / "done").write_text("done\n")
    code = main(
        [
            "sweep",
            "launch",
            *argv,
            "--launcher",
            "slurm",
            "--submitit-cluster",
            "local",
            "--gpus-per-job",
            "0",
            "--time",
            "0:10:00",
            "--array-parallelism",
            "2",
            "--wait",
            "--yes",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        "About to launch 2 job(s) with the Slurm launcher (submitit's local executor, 10 min" in out
    )
    assert "Launch finished: 2 completed, 0 failed." in out
    for job in jobs:
        assert run_state(job.output_dir) is JobState.DONE
        assert kit.read_json(job.output_dir / "job.json")["launcher"] == "slurm"
    logs = list((tmp_path / "sweep" / ".submitit").glob("*_log.out"))
    assert len(logs) == 2


def test_requeue_resubmits_the_same_job(kit, tmp_path):
    job = kit.fast_spec(tmp_path).jobs()[0]
    delayed = SweepTask().checkpoint(job)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.args == (job,) and isinstance(delayed.function, SweepTask)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),
        ("1:30:00", 90),
        ("12:00:00", 720),
        ("1-00:00", 1440),
        ("0-02", 120),
        ("10:30", 11),
    ],
)
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


def test_parse_time_rejects_nonsense():
    with pytest.raises(ConfigError, match="is not a Slurm time"):
        parse_time("1h")
    with pytest.raises(ConfigError, match="at least one minute"):
        parse_time("0")
