"""Checkpoints that verify: a damaged or inconsistent checkpoint is never resumed from.

The fault-injection cases: 64 flipped bytes in the middle of checkpoint.pt (the run resumed and
finished with a loss 1e9 times too big), a checkpoint edited to step 999 (a done run with 4 of 7
records) or -5 (records of steps 0-30 overwritten), results.jsonl deleted next to a checkpoint
(a done run with 3 of 7 records). Each is now a one-line error naming the damaged file and
`--restart-from-scratch`, with nothing written before lost; with that flag the run starts over
and ends as an uninterrupted run.
"""

import json

import pytest
import torch
from tests.train.helpers import strip_run_specific

from dgalign.algorithms.erm import ERM
from dgalign.analysis.loading import load_run
from dgalign.errors import RunDirError
from dgalign.runs.directory import RunDirectory
from dgalign.train import RunConfig, run_training
from dgalign.utils import io as io_utils
from dgalign.utils.io import atomic_torch_save, digest_path

FAST_HPARAMS = '{"backbone": "mlp", "mlp_width": 32, "batch_size": 16}'  # as `fast_hparams`


def _config(tmp_path, fast_hparams, name="run", **kw):
    args = dict(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=fast_hparams,
        steps=13,
        checkpoint_freq=2,
    )
    return RunConfig(**{**args, **kw})


def _interrupted(config, after_updates=8):
    """Run `config` until ERM.update's `after_updates`-th call raises KeyboardInterrupt; the
    directory then holds records of steps 0, 2, 4, 6 and a checkpoint at step 7."""
    calls = {"n": 0}
    original = ERM.update

    def update(self, minibatches):
        calls["n"] += 1
        if calls["n"] > after_updates:
            raise KeyboardInterrupt
        return original(self, minibatches)

    ERM.update = update
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(config, progress=False)
    finally:
        ERM.update = original
    rundir = RunDirectory(config.output_dir)
    assert [r["step"] for r in rundir.read_records()] == [0, 2, 4, 6]
    return rundir


def _snapshot(rundir):
    """Every file but the logs (out.txt / err.txt are appended to by design)."""
    logs = {"out.txt", "err.txt"}
    return {p.name: p.read_bytes() for p in rundir.path.iterdir() if p.name not in logs}


def _refused(config, match):
    with pytest.raises(RunDirError, match=match) as info:
        run_training(config, progress=False)
    message = str(info.value)
    assert "\n" not in message and "--restart-from-scratch" in message
    return message


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The records of the run never interrupted (computed once for the module)."""
    config = _config(tmp_path_factory.mktemp("full"), FAST_HPARAMS, "full")
    return strip_run_specific(run_training(config, progress=False).records)


def _restart_matches(config, uninterrupted):
    result = run_training(config, progress=False, restart_from_scratch=True)
    assert result.status == "completed"
    assert strip_run_specific(result.records) == uninterrupted


def test_flipped_bytes_in_the_checkpoint_are_detected(tmp_path, fast_hparams, uninterrupted):
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    data = bytearray(rundir.checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    rundir.checkpoint.write_bytes(bytes(data))
    before = _snapshot(rundir)
    message = _refused(config, r"checkpoint .*checkpoint\.pt cannot be used: its SHA-256")
    assert "damaged" in message
    assert _snapshot(rundir) == before  # nothing written, nothing lost
    _restart_matches(config, uninterrupted)


@pytest.mark.parametrize(("step", "match"), [(999, "outside this run's 1..13"), (-5, "outside")])
def test_a_checkpoint_step_out_of_range_is_refused(tmp_path, fast_hparams, step, match):
    """Even with a matching digest (an edited file re-saved): the step must fit the run."""
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    state = torch.load(rundir.checkpoint, weights_only=True)
    atomic_torch_save(rundir.checkpoint, {**state, "step": step}, digest=True)
    before = _snapshot(rundir)
    _refused(config, match)
    assert _snapshot(rundir) == before


def test_a_checkpoint_step_between_checkpoints_is_refused(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    state = torch.load(rundir.checkpoint, weights_only=True)
    atomic_torch_save(rundir.checkpoint, {**state, "step": 6}, digest=True)
    _refused(config, "its step 6 follows no checkpoint")


def test_deleted_records_next_to_a_checkpoint_are_detected(tmp_path, fast_hparams, uninterrupted):
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    rundir.results.unlink()
    message = _refused(config, "results.jsonl lacks the records of steps 0, 2, 4, 6")
    assert "checkpoint.pt is at step 7" in message
    assert not rundir.results.exists() and not rundir.is_done()
    _restart_matches(config, uninterrupted)


def test_a_lost_record_in_the_middle_is_detected(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    lines = rundir.results.read_text().splitlines()
    rundir.results.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    _refused(config, "lacks the records of steps 2")


def test_a_checkpoint_without_its_digest_is_refused(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    digest_path(rundir.checkpoint).unlink()
    _refused(config, "digest file checkpoint.pt.sha256 is missing")


@pytest.mark.parametrize("damage", ["missing keys", "wrong shapes", "optimizer shapes"])
def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(tmp_path, fast_hparams, damage):
    config = _config(tmp_path, fast_hparams)
    rundir = _interrupted(config)
    state = torch.load(rundir.checkpoint, weights_only=True)
    model = dict(state["model"])
    name = next(iter(model))
    if damage == "missing keys":
        model.pop(name)
    elif damage == "wrong shapes":
        model[name] = torch.zeros(3, 3)
    else:
        optimizer = state["extra"]["optimizer"]
        first = next(iter(optimizer["state"]))
        optimizer["state"][first]["exp_avg"] = torch.zeros(7)
    atomic_torch_save(rundir.checkpoint, {**state, "model": model}, digest=True)
    _refused(config, "does not fit this run")


def test_a_kill_between_the_digest_and_the_checkpoint_still_resumes(
    tmp_path, fast_hparams, monkeypatch, uninterrupted
):
    """The digest is written first and lists the previous checkpoint's too, so a kill between
    the two renames leaves an old checkpoint that verifies (and resumes exactly)."""
    config = _config(tmp_path, fast_hparams)
    original = io_utils.atomic_write_bytes
    saves = {"n": 0}

    def killed_on_third_checkpoint(path, data):
        if str(path).endswith("checkpoint.pt"):
            saves["n"] += 1
            if saves["n"] == 3:
                raise KeyboardInterrupt
        original(path, data)

    monkeypatch.setattr(io_utils, "atomic_write_bytes", killed_on_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    monkeypatch.setattr(io_utils, "atomic_write_bytes", original)
    listed = json.loads(digest_path(tmp_path / "run" / "checkpoint.pt").read_text())["sha256"]
    assert len(listed) == 3  # the unwritten third checkpoint's, and the two before it
    result = run_training(config, progress=False)
    assert strip_run_specific(result.records) == uninterrupted


def test_a_damaged_model_file_is_refused_by_the_analyses(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    run_training(config, progress=False)
    model = tmp_path / "run" / "model.pt"
    assert load_run(tmp_path / "run").args["dataset"] == "Spurious28"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=r"model\.pt cannot be used: its SHA-256") as info:
        load_run(tmp_path / "run")
    assert "\n" not in str(info.value)


def test_a_cpu_run_saves_no_gpu_state_and_touches_no_gpu(monkeypatch):
    from dgalign.train import state

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU run asked CUDA for its generator state")

    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, refuse)
    saved = state.rng_state(torch.device("cpu"))
    assert saved["cuda"] == []
    state.set_rng_state(saved, torch.device("cpu"))
    state.set_rng_state({**saved, "cuda": [torch.zeros(8, dtype=torch.uint8)]}, torch.device("cpu"))
