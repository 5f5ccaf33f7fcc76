"""SWA: the running mean of the weights, BatchNorm re-estimation, and the training loop's
records, model_swa.pt, identity and exact resume with --swa."""

from __future__ import annotations

import pytest
import torch
from tests.train.helpers import strip_run_specific
from torch import nn

from dgalign.algorithms.erm import ERM
from dgalign.cli import main
from dgalign.errors import RunDirError
from dgalign.runs.directory import RunDirectory
from dgalign.train import RunConfig, run_training
from dgalign.train.swa import WeightAverage, has_batchnorm, recompute_batchnorm


class TinyBN(nn.Module):
    """Linear -> BatchNorm -> Dropout -> Linear, with the algorithm's `predict`."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
        self.head = nn.Linear(4, 2)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_average_is_the_running_mean_of_the_snapshots_from_start():
    torch.manual_seed(0)
    model = TinyBN()
    average = WeightAverage(model, start=2)
    assert average.model.optimizer is None and not any(
        p.requires_grad for p in average.model.parameters()
    )
    snapshots = []
    for step in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        snapshots.append({k: v.clone() for k, v in model.named_parameters()})
        average.update(model, step)
        if step < 2:  # before the start the average follows the model
            for k, v in average.model.named_parameters():
                assert torch.equal(v, snapshots[-1][k])
    assert average.count == 4
    for name, value in average.model.named_parameters():
        expected = torch.stack([s[name] for s in snapshots[2:]]).mean(0)
        torch.testing.assert_close(value, expected)


def test_batchnorm_statistics_are_recomputed_without_touching_the_rng():
    torch.manual_seed(0)
    model = TinyBN()
    assert has_batchnorm(model)
    batches = [torch.randn(16, 3) + 2.0 for _ in range(3)]
    rng = torch.get_rng_state()
    recompute_batchnorm(model, batches)
    assert torch.equal(torch.get_rng_state(), rng)
    bn = model.body[1]
    with torch.no_grad():
        features = model.body[0](torch.cat(batches))
    torch.testing.assert_close(bn.running_mean, features.mean(0))
    per_batch_var = torch.stack([model.body[0](b).var(0) for b in batches]).detach()
    torch.testing.assert_close(bn.running_var, per_batch_var.mean(0))
    assert bn.momentum == 0.1 and model.training  # restored
    average = WeightAverage(model)
    assert average.prepare(iter(batches)) is average.model


def test_average_state_round_trips():
    torch.manual_seed(0)
    model = TinyBN()
    average = WeightAverage(model, start=0)
    average.update(model, 0)
    other = WeightAverage(TinyBN(), start=7)
    other.load_state_dict(average.state_dict())
    assert other.count == 1 and other.start == 0
    for k, v in average.model.state_dict().items():
        assert torch.equal(v, other.model.state_dict()[k])


def _config(tmp_path, fast_hparams, name, **kw):
    args = dict(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=fast_hparams,
        steps=14,
        checkpoint_freq=5,
        swa=True,
        swa_start=3,
    )
    args.update(kw)
    return RunConfig(**args)


def test_swa_run_records_saves_and_resumes_exactly(tmp_path, fast_hparams, monkeypatch):
    full = run_training(_config(tmp_path, fast_hparams, "full"), progress=False).records
    for record in full:
        for i in range(3):
            assert 0.0 <= record[f"swa_env{i}_in_acc"] <= 1.0
            assert 0.0 <= record[f"swa_env{i}_out_acc"] <= 1.0
    full_dir = RunDirectory(tmp_path / "full")
    model = torch.load(full_dir.model, weights_only=True)
    swa = torch.load(full_dir.path / "model_swa.pt", weights_only=True)
    assert swa.keys() == model.keys()
    assert any(not torch.equal(v, model["model_dict"][k]) for k, v in swa["model_dict"].items())

    calls = {"n": 0}
    original = ERM.update

    def crash_after_7(self, minibatches):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return original(self, minibatches)

    monkeypatch.setattr(ERM, "update", crash_after_7)
    config = _config(tmp_path, fast_hparams, "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    monkeypatch.setattr(ERM, "update", original)
    resumed = run_training(config, progress=False).records
    assert strip_run_specific(resumed) == strip_run_specific(full)
    again = torch.load(tmp_path / "resumed" / "model_swa.pt", weights_only=True)
    for key, value in swa["model_dict"].items():
        assert torch.equal(value, again["model_dict"][key]), key


def test_swa_does_not_change_the_trained_model(tmp_path, fast_hparams):
    plain = run_training(_config(tmp_path, fast_hparams, "plain", swa=False), progress=False)
    averaged = run_training(_config(tmp_path, fast_hparams, "swa"), progress=False)
    for a, b in zip(plain.records, averaged.records, strict=True):
        for key, value in a.items():
            if key.startswith("env") or key == "loss":
                assert b[key] == value, key


def test_swa_is_part_of_the_run_identity(tmp_path, fast_hparams):
    plain = _config(tmp_path, fast_hparams, "r", swa=False)
    assert "swa" not in plain.identity()  # old run directories stay valid
    assert _config(tmp_path, fast_hparams, "r").identity()["swa"] is True
    run_training(_config(tmp_path, fast_hparams, "r", steps=2), progress=False)
    with pytest.raises(RunDirError, match="differs in swa"):
        run_training(_config(tmp_path, fast_hparams, "r", steps=2, swa=False), progress=False)


def test_cli_swa_flag(tmp_path, fast_hparams, capsys):
    out = tmp_path / "cli"
    argv = ["train", "--dataset", "Spurious28", "--algorithm", "ERM", "--test-envs", "2"]
    argv += ["--output-dir", str(out), "--hparams", fast_hparams, "--steps", "4"]
    argv += ["--swa", "--swa_start", "1", "--no-progress"]
    assert main(argv) == 0
    assert (out / "model_swa.pt").exists()
    assert "swa_env0_in_acc" in (out / "results.jsonl").read_text()
    bad = [*argv[:-4], "--swa", "--swa-start", "-1", "--no-progress"]
    bad[bad.index(str(out))] = str(tmp_path / "bad")
    assert main(bad) != 0
    assert "--swa-start/--swa_start: must be an integer >= 0, got -1" in capsys.readouterr().err
