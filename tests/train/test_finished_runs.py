"""A kill between writing `done` and removing the checkpoint no longer leaves checkpoint.pt in
a finished directory for good: the next command on it removes it (and its digest)."""

import pytest

from dgalign.runs.directory import RunDirectory
from dgalign.train import RunConfig, loop, run_training
from dgalign.utils.io import digest_path, remove_with_digest


def test_checkpoint_left_by_a_kill_after_done_is_removed(tmp_path, fast_hparams, monkeypatch):
    config = RunConfig(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(tmp_path / "run"),
        test_envs=[2],
        hparams=fast_hparams,
        steps=5,
        checkpoint_freq=2,
    )

    def killed(path):
        raise KeyboardInterrupt  # the process dies right after writing `done`

    monkeypatch.setattr(loop, "remove_with_digest", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    rundir = RunDirectory(config.output_dir)
    assert rundir.is_done() and rundir.checkpoint.exists()
    records = rundir.results.read_bytes()
    monkeypatch.setattr(loop, "remove_with_digest", remove_with_digest)
    assert run_training(config, progress=False).status == "already_done"
    assert not rundir.checkpoint.exists() and not digest_path(rundir.checkpoint).exists()
    assert rundir.results.read_bytes() == records and rundir.model.exists()
