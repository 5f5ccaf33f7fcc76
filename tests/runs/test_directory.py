"""`run.json` is checked and written under the run lock: two runs of different settings aimed
at one new directory never mix, and the loser is told, in one line, why.

Before, `run.json` was written before the lock was taken: the loser crashed with a traceback
(its temporary file removed by the winner's cleanup), or `run.json` described the refused run
while the results were the other's.
"""

import json

from tests.train.helpers import paused_cli, run_cli, train_argv

from dgalign.cli import main


def _one_line(err: str) -> str:
    err = err.strip()
    assert err.startswith("dgalign: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_a_run_that_holds_the_lock_first_keeps_the_directory(tmp_path, fast_hparams):
    """Seed 0 takes the lock and pauses before looking at run.json; seed 1 is refused as busy
    and writes nothing; once seed 0 finished, seed 1 is refused as a different run."""
    out = tmp_path / "run"
    first = paused_cli("locked", train_argv(out, fast_hparams, "--seed", "0"))
    second = run_cli(train_argv(out, fast_hparams, "--seed", "1"))
    assert second.returncode == 2 and "is being run by pid" in _one_line(second.stderr)
    assert not (out / "run.json").exists()
    _, err = first.communicate("\n", timeout=300)
    assert first.returncode == 0, err
    results = (out / "results.jsonl").read_bytes()
    again = run_cli(train_argv(out, fast_hparams, "--seed", "1"))
    assert again.returncode == 2
    assert "holds a different run (differs in seed)" in _one_line(again.stderr)
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    assert (out / "results.jsonl").read_bytes() == results
    assert all(json.loads(line)["args"]["seed"] == 0 for line in results.decode().splitlines())


def test_a_run_that_reaches_the_lock_second_is_refused_as_a_different_run(tmp_path, fast_hparams):
    """Seed 0 pauses before taking the lock; seed 1 runs the directory to the end; seed 0 then
    finds run.json of seed 1 and is refused: run.json and the results both belong to seed 1."""
    out = tmp_path / "run"
    first = paused_cli("opened", train_argv(out, fast_hparams, "--seed", "0"))
    second = run_cli(train_argv(out, fast_hparams, "--seed", "1"))
    assert second.returncode == 0, second.stderr
    results = (out / "results.jsonl").read_bytes()
    _, err = first.communicate("\n", timeout=300)
    assert first.returncode == 2
    assert "holds a different run (differs in seed)" in _one_line(err)
    assert json.loads((out / "run.json").read_text())["seed"] == 1
    assert (out / "results.jsonl").read_bytes() == results
    assert (out / "done").exists()


def test_run_json_that_is_not_an_object_is_one_line_and_restart_replaces_it(
    tmp_path, fast_hparams, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("[]")
    assert main(train_argv(out, fast_hparams)) == 2
    assert "run.json is unreadable or not a JSON object" in _one_line(capsys.readouterr().err)
    assert (out / "run.json").read_text() == "[]"
    assert main(train_argv(out, fast_hparams, "--restart-from-scratch")) == 0
    assert json.loads((out / "run.json").read_text())["dataset"] == "Spurious28"


def test_restart_from_scratch_never_takes_another_runs_directory(tmp_path, fast_hparams, capsys):
    out = tmp_path / "run"
    assert main(train_argv(out, fast_hparams, "--seed", "0")) == 0
    before = (out / "results.jsonl").read_bytes()
    assert main(train_argv(out, fast_hparams, "--seed", "3", "--restart-from-scratch")) == 2
    assert "holds a different run" in _one_line(capsys.readouterr().err)
    assert (out / "results.jsonl").read_bytes() == before and (out / "done").exists()


def test_restart_from_scratch_reruns_a_finished_run_identically(tmp_path, fast_hparams, capsys):
    out = tmp_path / "run"
    assert main(train_argv(out, fast_hparams)) == 0
    first = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert main(train_argv(out, fast_hparams, "--restart-from-scratch")) == 0
    second = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    strip = {"step_time", "mem_gb"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in second] == [
        {k: v for k, v in r.items() if k not in strip} for r in first
    ]
    assert "finished run" not in capsys.readouterr().err
