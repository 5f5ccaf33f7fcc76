"""End to end: a tiny DomainBed sweep (Spurious28, 2 algorithms, 2 hparams draws, 2 trials, all
single and pair test envs = 48 jobs) with the local launcher, and its part for one hparams
draw (24 jobs) with Ray; one job SIGKILLed mid-run; relaunch; a complete report
under all three selection methods."""

import json
import threading

import pytest

from dgalign import algorithms
from dgalign.report import build_tables, load_runs, make_report
from dgalign.runs.state import JobState, run_state
from dgalign.selection import METHODS
from dgalign.sweep.local import LocalLauncher
from dgalign.sweep.ray_launcher import RayLauncher
from dgalign.sweep.status import print_status

pytestmark = pytest.mark.slow  # real processes; a few seconds each

CHEAP_SECOND = ("IRM", "VREx", "CORAL", "GroupDRO", "MMD")


def sweep_jobs(kit, tmp_path, full=True):
    """48 jobs (`full`; 24 without the second hparams draw): ERM and a
    cheap second algorithm if one is registered, else ERM twice with different
    hyper-parameters (two launches into the same sweep directory)."""
    second = next((a for a in CHEAP_SECOND if a in algorithms.names()), None)
    grid = {
        "n_hparams": 2 if full else 1,
        "n_trials": 2,
        "single_test_envs": False,
        "steps": 6,
        "checkpoint_freq": 2,
    }
    if second:
        return kit.fast_spec(tmp_path, algorithms=["ERM", second], **grid).jobs(), 2
    other = kit.FAST.replace('"mlp_width": 32', '"mlp_width": 16')
    jobs = kit.fast_spec(tmp_path, **grid).jobs()
    jobs += kit.fast_spec(tmp_path, hparams=other, **grid).jobs()
    return jobs, 1


#: a bound, not a timing: 48 tiny jobs take about a minute alone, many more on a loaded machine
LAUNCH_BOUND_S = 1800


def launch_with_a_kill(kit, launcher, jobs):
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=launcher.run(jobs)))
    thread.start()
    killed = kit.kill_mid_run(jobs)
    thread.join(LAUNCH_BOUND_S)
    assert not thread.is_alive(), f"the launch did not finish within {LAUNCH_BOUND_S} s"
    return result["summary"], killed


def check_complete_report(sweep_dir, n_algorithms, n_jobs=48):
    runs = load_runs(sweep_dir)
    assert len(runs) == n_jobs and all(r.state is JobState.DONE for r in runs)
    for method in METHODS:
        tables = build_tables(runs, method)
        assert [t.dataset for t in tables] == ["Spurious28", None]
        for table in tables:
            assert len(table.row_labels) == n_algorithms and not table.notes, table.notes
            assert all(c.mean is not None for row in table.cells for c in row)
            for row in table.cells:
                assert all(c.n == 2 for c in row[:-1])  # both trials everywhere
    text = make_report(sweep_dir)
    assert "X" not in text.replace("Algorithm", "") and "[1]" not in text
    # DomainBed's collect_results reads what we write: every record carries its fields
    for run in runs:
        raw = (run.path / "results.jsonl").read_text()
        assert raw.endswith("\n")  # DomainBed strips the last character of every line
        for line in raw.splitlines():
            record = json.loads(line)
            for key in ("dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed"):
                assert key in record["args"]
            assert {
                "step",
                "hparams",
                *(f"env{i}_{s}_acc" for i in range(3) for s in ("in", "out")),
            } <= set(record)


def check_killed_then_resumed(kit, killed, summary, sweep_dir, relaunch):
    assert killed.name in {j.name for j, _ in summary.failed}
    assert run_state(killed.output_dir) is JobState.FAILED
    lines = []
    counts = print_status(relaunch["jobs"], sweep_dir, out=lines.append)
    assert counts[JobState.FAILED] == len(summary.failed)
    assert counts[JobState.DONE] == len(summary.completed) >= len(relaunch["jobs"]) - 8
    again = relaunch["launcher"].run(relaunch["jobs"])
    assert killed in again.completed and not again.failed
    assert "resuming" in (killed.output_dir / "out.txt").read_text()
    # Resumed, not restarted: one record per checkpointed step, none twice. (Printed "step N:"
    # lines are no evidence: a kill between saving a checkpoint and printing its line loses the
    # line for good, and the resumed run rightly does not redo that step.)
    steps = [r["step"] for r in kit.read_records(killed.output_dir)]
    assert steps == [0, 2, 4, 5]


def test_local_sweep_end_to_end(kit, tmp_path):
    jobs, n_algorithms = sweep_jobs(kit, tmp_path)
    assert len(jobs) == 48
    summary, killed = launch_with_a_kill(kit, LocalLauncher(workers=2, out=lambda _: None), jobs)
    assert len(summary.completed) + len(summary.failed) == 48
    relaunch = {"jobs": jobs, "launcher": LocalLauncher(workers=2, out=lambda _: None)}
    check_killed_then_resumed(kit, killed, summary, tmp_path / "sweep", relaunch)
    check_complete_report(tmp_path / "sweep", n_algorithms)


def test_ray_sweep_end_to_end(kit, tmp_path, ray_local):
    jobs, n_algorithms = sweep_jobs(kit, tmp_path, full=False)
    assert len(jobs) == 24
    summary, killed = launch_with_a_kill(kit, RayLauncher(out=lambda _: None), jobs)
    failure = dict((j.name, d) for j, d in summary.failed)[killed.name]
    assert failure.startswith("Ray task failed")  # the worker process died
    relaunch = {"jobs": jobs, "launcher": RayLauncher(out=lambda _: None)}
    check_killed_then_resumed(kit, killed, summary, tmp_path / "sweep", relaunch)
    check_complete_report(tmp_path / "sweep", n_algorithms, n_jobs=24)
